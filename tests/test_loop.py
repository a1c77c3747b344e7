"""The training loop: truncation vs termination, seeds, determinism, evaluation, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL, arrays, evaluate_constant_policy, evaluate_initial, flat_runs

from dqn_jax.config import Config
from dqn_jax.device_loop import make_train
from dqn_jax.run import seed_keys, train


def stored_transitions(config: Config, iterations: int):
    """Run ``iterations`` loop iterations of seed 0 (no learning) and return its replay data."""
    trainer = make_train(config)
    state = jax.jit(trainer.init)(seed_keys(config)[0])
    state, out = jax.jit(trainer.run_chunk, static_argnums=2)(state, jnp.int32(0), iterations)
    n = iterations * config.env_steps_per_iteration
    return jax.tree.map(lambda x: np.asarray(x[:n]), state.agent.replay.data), out


def test_time_limit_truncation_bootstraps_from_the_real_final_observation():
    # MountainCar-v0: a random agent never reaches the goal, so every episode ends by the
    # 200-step time limit. Those transitions must be stored as non-terminal, with the true final
    # observation as next_obs (not the reset observation of the next episode).
    config = Config(
        env="MountainCar-v0",
        variant="dqn",
        num_envs=1,
        train_every=1,
        total_steps=1000,
        learning_starts=10**6,
        eps_start=1.0,
        eps_end=1.0,
        buffer_size=1000,
        num_chunks=1,
    )
    data, out = stored_transitions(config, 450)
    lengths = np.asarray(out.ep_length).reshape(-1)
    assert list(np.nonzero(lengths)[0]) == [199, 399] and set(lengths[lengths > 0]) == {200}
    gamma = np.float32(config.gamma)
    assert np.all(data.discount == gamma), "a time-limit truncation was stored as terminal"
    assert list(np.nonzero(data.last)[0]) == [199, 399]  # ...but as the end of its episode
    # Within an episode next_obs[t] == obs[t+1]; across the boundary it must not be the reset obs
    for t in range(449):
        if t in (199, 399):
            assert not np.allclose(data.next_obs[t], data.obs[t + 1])
            # MountainCar moves at most 0.07 per step: next_obs continues obs[t]
            assert abs(data.next_obs[t][0] - data.obs[t][0]) <= 0.07 + 1e-6
            assert data.obs[t + 1][1] == 0.0  # the reset observation has zero velocity
        else:
            np.testing.assert_array_equal(data.next_obs[t], data.obs[t + 1])


@pytest.mark.slow
def test_termination_is_stored_as_terminal():
    # CartPole under a random policy terminates (pole falls) long before its time limit.
    config = Config(
        env="CartPole-v1",
        variant="dqn",
        num_envs=2,
        train_every=2,
        total_steps=1000,
        learning_starts=10**6,
        buffer_size=1000,
        num_chunks=1,
    )
    data, out = stored_transitions(config, 200)
    ends = np.asarray(out.ep_length).reshape(-1) > 0  # [400] in time-major, env-minor order
    np.testing.assert_array_equal(data.discount == 0, ends)
    assert np.all(data.discount[~ends] == np.float32(config.gamma))
    np.testing.assert_array_equal(data.last.astype(bool), ends)
    # the stored final observation is out of bounds (|x| > 2.4 or |theta| > 12 degrees)
    final = data.next_obs[ends]
    assert np.all((np.abs(final[:, 0]) > 2.4) | (np.abs(final[:, 2]) > 12 * 2 * np.pi / 360))


def leaves(state):
    return arrays(state.agent.learner.params)


@pytest.mark.slow
def test_same_seed_is_bit_identical_and_seeds_differ():
    config = Config(num_seeds=2, **SMALL)
    a = train(config, progress=False, echo=lambda s: None)
    b = train(config, progress=False, echo=lambda s: None)
    for x, y in zip(leaves(a.state), leaves(b.state), strict=True):
        np.testing.assert_array_equal(x, y)
    for ea, eb in zip(a.episodes, b.episodes, strict=True):
        np.testing.assert_array_equal(ea, eb)
    np.testing.assert_array_equal(a.eval_returns, b.eval_returns)
    # the two seeds of one run differ, in parameters and in experience
    for x in leaves(a.state):
        assert not np.array_equal(x[0], x[1])
    assert not np.array_equal(a.episodes[0][:20], a.episodes[1][:20])


@pytest.mark.slow
def test_seed_offset_selects_the_same_run():
    # run 1 of a 2-seed run with seed 0 is the run of seed 1: same episodes
    both = train(Config(num_seeds=2, **SMALL), progress=False, echo=lambda s: None)
    one = train(Config(num_seeds=1, seed=1, **SMALL), progress=False, echo=lambda s: None)
    np.testing.assert_array_equal(both.episodes[1][:, :2], one.episodes[0][:, :2])


@pytest.mark.slow
def test_random_agent_runs_through_the_loop():
    config = Config(**{**SMALL, "variant": "random", "total_steps": 4_000})
    result = train(config, progress=False, echo=lambda s: None)
    lengths = result.episodes[0][:, 1]
    # CartPole under uniform random actions lasts about 22 steps on average
    assert 15 < lengths.mean() < 30
    # env steps at which episodes end are increasing and the lengths add up
    assert np.all(np.diff(result.episodes[0][:, 0]) >= 0)
    assert lengths.sum() <= 4_000


@pytest.mark.slow
def test_ddqn_learns_cartpole():
    # A short run that fails if learning breaks: random play averages ~22 steps per episode.
    config = Config(
        env="CartPole-v1",
        variant="ddqn",
        num_seeds=2,
        total_steps=30_000,
        num_envs=4,
        train_every=4,
        batch_size=64,
        lr=1e-3,
        target_period=500,
        eps_duration=10_000,
        learning_starts=1_000,
        num_chunks=3,
        eval_episodes=5,
    )
    result = train(config, progress=False, echo=lambda s: None)
    for eps in result.episodes:
        assert eps[-20:, 2].mean() > 100, eps[-20:, 2]
    assert result.eval_returns.mean() > 100


@pytest.mark.slow
def test_q_probes_trace_the_online_net_on_fixed_states(tmp_path):
    config = Config(num_seeds=1, probe_states=3, **SMALL)
    result = train(config, tmp_path / "run", progress=False, echo=lambda s: None)
    trainer = make_train(config)
    probes = np.asarray(result.state.probes[0])
    assert probes.shape == (3, 4) and len(np.unique(probes, axis=0)) == 3
    params = jax.tree.map(lambda x: x[0], result.state.agent.learner.params)
    final_q = np.asarray(trainer.agent.apply_fn(params, probes))
    rows = np.loadtxt(tmp_path / "run" / "q_probes.csv", delimiter=",", skiprows=1)
    last = rows[rows[:, 1] == rows[:, 1].max()]
    assert last.shape == (3 * 2, 5)  # 3 probes x 2 actions at the final env step
    np.testing.assert_allclose(last[:, 4].reshape(3, 2), final_q, rtol=1e-5)
    assert (tmp_path / "run" / "q_probes.png").stat().st_size > 10_000


# The family's heads, small (fields only their variant reads).
FAMILY = dict(num_atoms=11, num_quantiles=8)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["c51", "qr_dqn", "m_dqn"])
def test_family_runs_learn_on_cartpole(variant):
    # A real tiny run of 2 seeds (rainbow and iqn: the same checks on the run of
    # tests/test_checkpoint.py::test_stop_and_resume_is_bit_identical_for_the_family).
    fields = {**SMALL, "total_steps": 600, "num_chunks": 1, "eval_episodes": 0, **FAMILY}
    config = Config(**{**fields, "variant": variant, "eps_duration": 400}, num_seeds=2)
    trainer = make_train(config)
    initial = jax.jit(jax.vmap(trainer.init))(seed_keys(config), jnp.arange(2))
    result = train(config, trainer=trainer, progress=False, echo=lambda s: None)
    agent = result.state.agent
    stats = np.asarray(agent.stats)  # loss sum, Q sum, iterations learned (the only chunk)
    learned = (config.total_steps - config.learning_starts) // config.env_steps_per_iteration + 1
    assert (stats[:, 2] == learned).all() and np.isfinite(stats[:, :2]).all()
    for before, after in zip(leaves(initial), leaves(result.state), strict=True):
        assert not np.array_equal(before, after)
    np.testing.assert_array_equal(agent.replay.size, [600, 600])  # one-step: every env step
    actions = np.asarray(agent.replay.data.action)
    assert all(set(np.unique(a)) == {0, 1} for a in actions)
    assert all(len(e) > 0 for e in result.episodes)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "gymnasium"])
def test_eval_epsilon_one_evaluates_a_uniform_random_policy_and_zero_stays_greedy(backend):
    # CartPole-v1 under a uniform random policy lasts 22.4 steps on average (std ~12): the mean
    # of 64 episodes lies in [17, 28] with overwhelming probability. An untrained greedy net
    # pushes one way almost always (about 9 steps), so a greedy evaluation would fail this.
    config = Config(**{**SMALL, "backend": backend, "num_envs": 1, "train_every": 1})
    config = config.replace(eval_episodes=64)

    def returns(epsilon: float) -> np.ndarray:
        return evaluate_initial(config.replace(eval_epsilon=epsilon))

    random_policy, greedy = returns(1.0), returns(0.0)
    assert 17 <= random_policy.mean() <= 28, random_policy.mean()
    assert greedy.mean() < 15 or greedy.std() < random_policy.std() / 2, greedy
    assert not np.array_equal(random_policy, greedy)


@pytest.mark.parametrize("backend", ["jax", "gymnasium"])
def test_evaluation_of_a_fixed_policy_gives_its_known_return(backend):
    # MountainCar-v0 pays -1 per step; pushing one way from rest never reaches the goal, so
    # every episode runs to the 200-step limit: exactly -200, none counted past its end.
    config = Config(
        **{**SMALL, "env": "MountainCar-v0", "backend": backend, "num_envs": 1, "train_every": 1}
    ).replace(eval_episodes=6)
    for action in (0, 2):
        np.testing.assert_array_equal(evaluate_constant_policy(config, action), -200.0)


@pytest.mark.parametrize(
    ("env_id", "steps"),
    [("CartPole-v1", 40), pytest.param("Asterix-MinAtar", 120, marks=pytest.mark.slow)],
)
def test_the_evaluation_step_is_the_autoreset_step_until_each_episode_ends(env_id, steps):
    # Evaluation steps its environments without gymnax's autoreset (a smaller program to
    # compile). Every transition up to and including an episode's end must be the autoreset
    # step's: the same rewards and ends, and observations up to float rounding (the two
    # programs fuse CartPole's arithmetic differently). Asterix draws from its key in the step.
    from dqn_jax.envs import jax_envs

    num_envs = 32
    spec = jax_envs.env_spec(env_id)
    step, step_to_end = (
        jax.jit(jax_envs.step, static_argnums=0),
        jax.jit(jax_envs.step_to_episode_end, static_argnums=0),
    )
    _, state = jax_envs.reset(env_id, jax.random.key(1), num_envs)
    other = state
    alive = np.ones(num_envs, bool)
    actions = np.random.default_rng(0).integers(0, spec.num_actions, (steps, num_envs))
    for t, key in enumerate(jax.random.split(jax.random.key(2), steps)):
        a, b = step(env_id, key, state, actions[t]), step_to_end(env_id, key, other, actions[t])
        for field in ("reward", "terminated", "truncated"):
            x, y = np.asarray(getattr(a, field)), np.asarray(getattr(b, field))
            np.testing.assert_array_equal(x[alive], y[alive], err_msg=f"{field} at step {t}")
        x, y = np.asarray(a.final_obs)[alive], np.asarray(b.final_obs)[alive]
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=f"final_obs at step {t}")
        alive &= ~np.asarray(a.terminated | a.truncated)
        state, other = a.env_state, b.env_state
    assert alive.sum() <= num_envs // 2, "too few episodes ended for the test to mean much"


@pytest.mark.slow
def test_options_never_run_elsewhere_do_what_they_say_through_the_loop():
    # One JAX-backend run of Double DQN with PER on a prefilled replay, soft target updates,
    # the notebook's init, TF1 RMSProp and gradient clipping; each check fails if its option
    # is dropped.
    fields = {**SMALL, "num_chunks": 1, "eval_episodes": 0, "total_steps": 1_000}
    config = Config(
        **{**fields, "variant": "ddqn_per", "target_period": 10, "buffer_size": 4_096},
        prefill_episodes=6,
        tau=0.5,
        init_scheme="notebook",
        optimizer="rmsprop",
        max_grad_norm=1.0,
    )
    trainer = make_train(config)
    initial = jax.jit(trainer.init)(seed_keys(config)[0])
    w = np.concatenate([x.ravel() for x in arrays(initial.agent.learner.params)])
    assert np.abs(w).max() <= 1.0 and 0.5 < w.std() < 0.65  # U[-1, 1]: std 0.577
    prefilled = jax.jit(trainer.prefill)(initial)
    data = jax.tree.map(np.asarray, prefilled.agent.replay.data)
    stored = int(prefilled.agent.replay.size)
    assert data.last[:stored].sum() >= 6 and stored >= 6 * 8  # 6 random CartPole episodes
    result = train(config, progress=False, echo=lambda s: None)
    agent = result.state.agent
    assert int(agent.replay.size[0]) == stored + config.total_steps  # prefill kept, then the run
    priorities = np.asarray(agent.replay.tree.leaves[0][: stored + config.total_steps])
    assert len(np.unique(priorities)) > 100  # PER: |td| written back, not the insert value
    online, target = (flat_runs(p)[0] for p in (agent.learner.params, agent.learner.target_params))
    # tau 0.5, the last target update at the final step: halfway between, never a copy
    assert not np.array_equal(online, target)
    assert np.isfinite(np.asarray(agent.stats)).all()
    # TF1 RMSProp's accumulator (started at 1) is what the optimizer state holds
    states = jax.tree.leaves(agent.learner.opt_state, is_leaf=lambda x: hasattr(x, "nu"))
    assert any(hasattr(x, "nu") for x in states)
