"""Gymnasium backend: exact stored transitions around autoresets, schedules, transfers, CLI.

The truncation tests run the real host loop on a tiny registered environment whose observation
is ``[episode, t]``, so every stored transition can be checked exactly. Each anchor's mistake is
re-introduced by a monkeypatch and the same checker must report it:

- CleanRL #460: the reset observation stored as ``next_obs`` of an ended (truncated) episode;
- flashbax #3 / Stoix #147: a transition across an autoreset boundary (the naive next-step
  autoreset loop stores final obs -> reset obs);
- truncation stored as terminal (no bootstrap through a time limit).
"""

from __future__ import annotations

import json

import gymnasium as gym
import jax
import numpy as np
import pytest
from gymnasium import spaces
from helpers import evaluate_constant_policy

from dqn_jax import host_loop as gb
from dqn_jax.agent import act_from_plan, exploration_plan, num_updates
from dqn_jax.config import Config, ConfigError
from dqn_jax.envs import gym_envs, prepare, resolve_backend

COUNTER_ID = "DqnJaxTestCounter-v0"
LIMIT = 5  # TimeLimit truncates after this many steps
TERMINAL_FROM = 3  # action 1 at t >= TERMINAL_FROM terminates


class CounterEnv(gym.Env):
    """``obs = [episode, t]`` (episode counts this instance's resets from 0); reward = ``t``
    after the step; action 1 terminates once ``t >= TERMINAL_FROM``."""

    observation_space = spaces.Box(-1e6, 1e6, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self):
        self.episode, self.t = -1, 0

    def _obs(self):
        return np.array([self.episode, self.t], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        terminated = bool(action == 1 and self.t >= TERMINAL_FROM)
        return self._obs(), float(self.t), terminated, False, {}


if COUNTER_ID not in gym.registry:
    gym.register(COUNTER_ID, entry_point=CounterEnv, max_episode_steps=LIMIT)


def counter_config(**changes) -> Config:
    base = dict(
        env=COUNTER_ID,
        backend="gymnasium",
        variant="dqn",
        num_envs=2,
        train_every=2,
        total_steps=400,
        buffer_size=400,
        batch_size=16,
        learning_starts=10**6,  # never learn: only storage is under test
        target_period=100,
        eps_start=1.0,
        eps_end=1.0,
        hidden_sizes=(8,),
        num_chunks=2,
        eval_episodes=0,
    )
    return Config(**{**base, **changes})


def stored(config: Config):
    """The replay contents of a run, in insertion order, as numpy arrays."""
    result = gb.train(config, None, progress=False, echo=lambda _: None)
    data = jax.tree.map(lambda x: np.asarray(x[0]), result.state.replay.data)
    return data, result


def transition_errors(data, num_envs: int, gamma: float) -> set[str]:
    """Every rule of a correct replay of :class:`CounterEnv` that ``data`` breaks (a terminal
    transition has ``discount == 0``, any other ``discount == gamma``)."""
    errors = set()
    obs, nxt, act = data.obs, data.next_obs, data.action
    terminal = data.discount == 0
    if np.any(nxt[:, 0] != obs[:, 0]):
        errors.add("next_obs from another episode")
    if np.any(obs[:, 1] >= LIMIT) or np.any(nxt[:, 1] != obs[:, 1] + 1):
        errors.add("not one env step")
    if np.any(data.reward != nxt[:, 1]):
        errors.add("wrong reward")
    should_terminate = (act == 1) & (nxt[:, 1] >= TERMINAL_FROM)
    if np.any(terminal & ~should_terminate):
        errors.add("truncation stored as terminal")
    if np.any(~terminal & should_terminate):
        errors.add("termination stored as non-terminal")
    if np.any(~terminal & (data.discount != np.float32(gamma))):
        errors.add("wrong discount")
    if np.any((data.last == 1) != (terminal | (nxt[:, 1] == LIMIT))):
        errors.add("wrong episode end")
    # Per env, each transition starts where the previous one ended, or at the next reset.
    for e in range(num_envs):
        o, n, term = obs[e::num_envs], nxt[e::num_envs], terminal[e::num_envs]
        ended = term | (n[:, 1] == LIMIT)
        expected = np.where(ended[:-1, None], np.stack([n[:-1, 0] + 1, 0 * n[:-1, 1]], 1), n[:-1])
        if np.any(o[1:] != expected) or np.any(o[0] != 0):
            errors.add("missing or extra transition")
    return errors


@pytest.mark.slow
def test_stored_transitions_are_exact_around_truncations_and_terminations():
    config = counter_config()
    data, result = stored(config)
    assert data.obs.shape == (400, 2)
    assert transition_errors(data, config.num_envs, config.gamma) == set()
    truncated = (data.discount == np.float32(config.gamma)) & (data.next_obs[:, 1] == LIMIT)
    terminated = data.discount == 0
    assert truncated.sum() >= 5 and terminated.sum() >= 20  # both kinds of ends happened
    # The episode log agrees with the replay: one episode per end, lengths = final t.
    episodes = result.episodes[0]
    assert len(episodes) == truncated.sum() + terminated.sum()
    assert set(episodes[:, 1]) <= set(range(TERMINAL_FROM, LIMIT + 1))
    np.testing.assert_array_equal(episodes[:, 2], episodes[:, 1] * (episodes[:, 1] + 1) / 2)


def _next_step_env(env_id, num_envs):
    return gym.vector.SyncVectorEnv(
        [lambda: gym.make(env_id) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )


class _DoneIsTerminal(gym.vector.VectorWrapper):
    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        return obs, reward, terminated | truncated, truncated, info


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        ("reset_obs_as_next_obs", {"next_obs from another episode"}),  # CleanRL #460
        pytest.param(
            "naive_next_step_autoreset",
            {"next_obs from another episode", "not one env step"},
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "truncation_as_terminal", {"truncation stored as terminal"}, marks=pytest.mark.slow
        ),
    ],
)
def test_the_checker_catches_each_anchor_mistake(monkeypatch, mistake, expected):
    # The host loop reaches both through the gym_envs module.
    if mistake == "reset_obs_as_next_obs":
        monkeypatch.setattr(gym_envs, "stored_next_obs", lambda next_obs, done, info: next_obs)
    elif mistake == "naive_next_step_autoreset":
        monkeypatch.setattr(gym_envs, "make_vector_env", _next_step_env)
        monkeypatch.setattr(gym_envs, "stored_next_obs", lambda next_obs, done, info: next_obs)
    else:
        real = gym_envs.make_vector_env
        monkeypatch.setattr(gym_envs, "make_vector_env", lambda *a: _DoneIsTerminal(real(*a)))
    config = counter_config(num_envs=1, train_every=1, total_steps=200)
    data, _ = stored(config)
    assert expected <= transition_errors(data, 1, config.gamma)


@pytest.mark.parametrize(("env_id", "num_envs"), [(COUNTER_ID, 3), ("CartPole-v1", 2)])
def test_lean_vector_env_matches_gymnasium_sync_vector_env(env_id, num_envs):
    from dqn_jax.envs.vector_env import SameStepVectorEnv

    fns = [lambda: gym.make(env_id) for _ in range(num_envs)]
    ours = SameStepVectorEnv(fns)
    theirs = gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    np.testing.assert_array_equal(ours.reset(seed=7)[0], theirs.reset(seed=7)[0])
    rng, ends = np.random.default_rng(0), 0
    for _ in range(300):
        actions = rng.integers(0, 2, num_envs)
        got, want = ours.step(actions), theirs.step(actions)
        for a, b in zip(got[:4], want[:4], strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        done = want[2] | want[3]
        assert ("final_obs" in got[4]) == bool(done.any())
        for i in np.flatnonzero(done):
            np.testing.assert_array_equal(got[4]["final_obs"][i], want[4]["final_obs"][i])
        ends += done.sum()
    assert ends >= 10  # autoresets were exercised
    assert ours.observation_space == theirs.observation_space
    ours.close()
    theirs.close()


def test_stored_next_obs_takes_the_final_observation_only_where_done():
    next_obs = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 3.0]], np.float32)
    final = np.empty(3, object)
    final[0] = np.array([9.0, 5.0], np.float32)
    info = {"final_obs": final, "_final_obs": np.array([True, False, False])}
    out = gym_envs.stored_next_obs(next_obs, np.array([True, False, False]), info)
    np.testing.assert_array_equal(out, [[9, 5], [2, 0], [3, 3]])
    assert gym_envs.stored_next_obs(next_obs, np.zeros(3, bool), {}) is next_obs


def test_pack_and_unpack_round_trip_bit_exactly():
    rng = np.random.default_rng(0)
    arrays = (
        rng.normal(size=(3, 4, 2)).astype(np.float32),
        rng.integers(0, 256, (3, 84, 84)).astype(np.uint8),
        np.array([7], np.int32),
        np.array([np.nan, -0.0, 1e-45], np.float32),
        rng.integers(-5, 5, (5,)).astype(np.int32),
    )
    packed = gb.pack(*arrays)
    assert packed.dtype == np.uint8 and packed.shape == (sum(a.nbytes for a in arrays),)
    layout = tuple((a.shape, a.dtype) for a in arrays)
    out = jax.jit(lambda p: gb.unpack(p, layout))(packed)
    for got, want in zip(out, arrays, strict=True):
        assert np.asarray(got).dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got).view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize(("num_envs", "train_every"), [(1, 10), (4, 2), (2, 4), (3, 3)])
def test_schedule_matches_the_jax_loop(num_envs, train_every):
    total = 12 * num_envs * train_every * 10
    config = counter_config(
        num_envs=num_envs,
        train_every=train_every,
        total_steps=total,
        buffer_size=total,
        learning_starts=total // 3,
        target_period=7 * num_envs,
        batch_size=4,
    )
    vsteps = config.num_iterations * config.vector_steps_per_iteration
    kinds = [gb.schedule(config, v) for v in range(vsteps)]
    ends = [v for v, k in enumerate(kinds) if k.end]
    assert ends == list(
        range(config.vector_steps_per_iteration - 1, vsteps, config.vector_steps_per_iteration)
    )
    assert sum(k.learn for k in kinds) * config.updates_per_iteration == num_updates(config)
    # target updates: one per iteration whose env-step range crosses a multiple of the period
    per_iter = config.env_steps_per_iteration
    done = [(it + 1) * per_iter for it in range(config.num_iterations)]
    expected = sum(
        e // config.target_period != (e - per_iter) // config.target_period for e in done
    )
    assert sum(k.copy_target for k in kinds) == expected
    assert gb.kinds_in_run(config) == set(kinds)


def test_episode_stats_match_step_by_step_bookkeeping():
    rng = np.random.default_rng(1)
    rewards = rng.integers(-3, 4, (200, 3)).astype(np.float64)
    dones = rng.random((200, 3)) < 0.1
    dones[:, 2] = False  # an env whose episode spans every stretch
    running = (np.array([5.0, 0.0, 1.0]), np.array([4, 0, 7]))
    got_len, got_ret = [], []
    for stretch in (slice(0, 70), slice(70, 70), slice(70, 200)):  # incl. an empty stretch
        lengths, returns, running = gb.episode_stats(rewards[stretch], dones[stretch], *running)
        got_len.append(lengths)
        got_ret.append(returns)
    ret, length = np.array([5.0, 0.0, 1.0]), np.array([4, 0, 7])
    want_len, want_ret = np.zeros((200, 3), np.int64), np.zeros((200, 3))
    for t in range(200):
        ret, length = ret + rewards[t], length + 1
        want_len[t], want_ret[t] = np.where(dones[t], length, 0), np.where(dones[t], ret, 0)
        ret, length = np.where(dones[t], 0.0, ret), np.where(dones[t], 0, length)
    np.testing.assert_array_equal(np.concatenate(got_len), want_len)
    np.testing.assert_allclose(np.concatenate(got_ret), want_ret)
    np.testing.assert_allclose(running[0], ret)
    np.testing.assert_array_equal(running[1], length)


def test_exploration_plan_and_acting_from_it():
    uniforms = np.array(
        [[[0.5, 0.05], [0.99, 0.4]], [[0.0, 0.999], [0.0, 0.999999]]], np.float32
    )  # [V=2, (coin, action draw), N=2]
    plan = exploration_plan(uniforms, np.array([0.1, 1.0], np.float32), 3)
    np.testing.assert_array_equal(plan, [[-1, 1], [0, 2]])  # step 0: env 1 explores (0.05 < 0.1)
    q = np.array([[0.0, 1.0, 0.5], [2.0, 1.0, 0.0]], np.float32)
    np.testing.assert_array_equal(act_from_plan(q, plan[0]), [1, 1])
    np.testing.assert_array_equal(act_from_plan(q, plan[1]), [0, 2])
    # the law: explore with probability epsilon, then each action equally likely
    u = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (20_000, 2, 1)))
    plan = np.asarray(exploration_plan(u, np.full(20_000, 0.3, np.float32), 4))[:, 0]
    assert abs((plan >= 0).mean() - 0.3) < 0.015
    assert np.all(
        np.abs(np.bincount(plan[plan >= 0], minlength=4) / (plan >= 0).sum() - 0.25) < 0.02
    )


@pytest.mark.slow
def test_learning_run_is_deterministic_and_one_dispatch_per_step(tmp_path, capfd):
    config = Config(
        env="CartPole-v1",
        backend="gymnasium",
        variant="ddqn",
        num_envs=1,
        train_every=2,
        total_steps=400,
        buffer_size=400,
        batch_size=32,
        learning_starts=100,
        target_period=100,
        eps_duration=200,
        hidden_sizes=(16,),
        num_chunks=3,
        eval_episodes=2,
    )
    agent = gb.make_host_agent(config)  # shared: compiled once
    quiet = dict(agent=agent, progress=False, echo=lambda _: None)
    a = gb.train(config, tmp_path / "a", **quiet)
    b = gb.train(config, None, **quiet)
    c = gb.train(config.replace(seed=1), None, **quiet)  # the seed is used on the host side
    leaves = lambda r: [np.asarray(x) for x in jax.tree.leaves(r.state.learner.params)]  # noqa: E731
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(leaves(a), leaves(c), strict=True))
    assert a.eval_returns.shape == (1, 2)
    assert a.state.learner.params["params"]["Dense_0"]["kernel"].shape == (1, 4, 16)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    vector_steps = config.total_steps // config.num_envs
    dispatches = round(summary["dispatches_per_vector_step"] * vector_steps)
    # One per iteration end (every 2nd step) and one per other step unless it explores (the
    # plan says so): epsilon decays 1 -> 0.05 over the first 200 of the 400 steps.
    assert vector_steps * 0.6 < dispatches < vector_steps * 0.9
    assert summary["transfers_per_vector_step"] == 2 * summary["dispatches_per_vector_step"]
    # Measure the host->device transfers with JAX's transfer guard (it logs each implicit one)
    # in a run and in one twice as long: the difference is exactly one per extra dispatch.
    logged = []
    for steps in (200, 400):
        short = config.replace(total_steps=steps, eval_episodes=0, num_chunks=2)
        capfd.readouterr()
        with jax.transfer_guard("log"):  # each length its own agent (total_steps is baked in)
            own = dict(quiet, agent=gb.make_host_agent(short))
            s = gb.train(short, None, **own).summary
        logged.append((capfd.readouterr().err.count("host-to-device transfer"), s))
    (n_short, s_short), (n_long, s_long) = logged
    extra = s_long["dispatches_per_vector_step"] * 400 - s_short["dispatches_per_vector_step"] * 200
    assert n_long - n_short == round(extra)
    for name in ("config.json", "episodes.csv", "evals.csv", "summary.json", "episodes.png"):
        assert (tmp_path / "a" / name).exists()
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").open()]
    assert [r["env_step"] for r in records] == [134, 268, 400]  # one line per chunk
    # A shared agent may differ only in what the host loop alone reads; anything baked into its
    # programs is refused, never silently taken from the agent.
    with pytest.raises(ConfigError, match="built for another config .*total_steps"):
        gb.train(config.replace(total_steps=200), None, **quiet)


def test_env_spec_and_config_errors():
    spec = gym_envs.gymnasium_env_spec("CartPole-v0")
    assert (spec.obs_shape, spec.num_actions, spec.max_episode_steps) == ((4,), 2, 200)
    with pytest.raises(ValueError, match="Box action space"):
        gym_envs.gymnasium_env_spec("Pendulum-v1")
    with pytest.raises(ValueError, match="Did you mean"):
        gym_envs.gymnasium_env_spec("CartPol-v0")
    # backend="auto" is resolved by prepare (a Config itself no longer looks at env ids).
    assert resolve_backend("CartPole-v0") == "jax"
    assert prepare(Config(env="CartPole-v0"))[0].backend == "jax"
    assert prepare(Config(env="CartPole-v0", backend="gymnasium"))[0].backend == "gymnasium"
    assert resolve_backend(COUNTER_ID) == "gymnasium"
    with pytest.raises(ConfigError, match="Did you mean"):
        prepare(Config(env="CartPol-v0"))
    with pytest.raises(ConfigError, match="prefill_episodes=3 is invalid: must be 0"):
        gb.train(counter_config(prefill_episodes=3), None, progress=False)


@pytest.mark.slow
def test_cli_trains_on_gymnasium_cartpole_v0(tmp_path):
    from dqn_jax.cli import main

    out = tmp_path / "run"
    argv = ["train", "--env", "CartPole-v0", "--backend", "gymnasium", "--total-steps", "400"]
    argv += ["--learning-starts", "100", "--num-chunks", "2", "--eval-episodes", "1"]
    assert main([*argv, "--num-envs", "1", "--train-every", "1", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env"] == "CartPole-v0" and summary["backend"] == "gymnasium"


def test_gymnax_cartpole_matches_gymnasium_step_by_step():
    from dqn_jax.envs.jax_envs import env_spec, make_env

    gym_env = gym.make("CartPole-v1").unwrapped  # the bare dynamics, no wrappers
    jax_env, params = make_env("CartPole-v1")
    step = jax.jit(jax_env.step_env)
    terminated_fn = jax.jit(jax_env.is_terminated)
    rng = np.random.default_rng(0)
    key = jax.random.PRNGKey(0)  # unused by CartPole's dynamics

    def sync(seed: int):
        gym_env.reset(seed=seed)
        v = np.asarray(gym_env.state, np.float32)  # one float32 state for both
        gym_env.state = v.astype(np.float64)
        state = jax_env.reset_env(key, params)[1].replace(
            x=v[0], x_dot=v[1], theta=v[2], theta_dot=v[3], time=0
        )
        return state

    state, episodes, worst = sync(0), 0, 0.0
    for t in range(400):
        action = int(rng.integers(2))
        obs, reward, terminated, _, _ = gym_env.step(action)
        jax_obs, state, jax_reward, _, _ = step(key, state, action, params)
        jax_obs = np.asarray(jax_obs)
        worst = max(worst, float(np.max(np.abs(jax_obs - obs))))
        np.testing.assert_allclose(jax_obs, obs, rtol=1e-5, atol=1e-5, err_msg=f"step {t}")
        assert float(jax_reward) == reward == 1.0
        assert bool(terminated_fn(state, params)) == terminated, f"step {t}"
        if terminated:
            state, episodes = sync(episodes + 1), episodes + 1
    assert episodes >= 10  # many episodes, each compared from its first step to its end
    assert env_spec("CartPole-v0").max_episode_steps == 200
    assert gym_envs.gymnasium_env_spec("CartPole-v0").max_episode_steps == 200


def test_cli_sends_a_gymnasium_only_id_to_the_gymnasium_backend():
    from dqn_jax.cli import parse_train_args

    config, _ = parse_train_args(["--env", COUNTER_ID])  # default preset: CartPole on JAX
    assert config.backend == "gymnasium"
    assert parse_train_args(["--env", "Acrobot-v1"])[0].backend == "jax"
    assert parse_train_args(["--preset", "cleanrl-cartpole"])[0].backend == "gymnasium"
    forced = parse_train_args(["--env", "CartPole-v1", "--backend", "gymnasium"])[0]
    assert forced.backend == "gymnasium"


# Tiny Gymnasium runs of the family: 1 env, CartPole-v1, small heads. The target net blends
# (tau 0.1) at every iteration's end, so a run compiles two end programs (before and after
# learning starts), not four.
FAMILY_GYM = dict(
    env="CartPole-v1",
    backend="gymnasium",
    num_envs=1,
    train_every=1,
    total_steps=300,
    buffer_size=400,
    batch_size=16,
    learning_starts=100,
    target_period=1,
    tau=0.1,
    eps_duration=200,
    hidden_sizes=(16,),
    num_chunks=1,
    eval_episodes=0,
    num_atoms=11,
    num_quantiles=8,
    num_tau_samples=8,
    num_tau_prime_samples=8,
    num_quantile_samples=8,
)


def check_learned(config: Config, state) -> None:
    """Checks on a host-loop run's final state (no leading seed axis): every iteration from
    ``learning_starts`` on learned with a finite loss, the parameters moved away from the
    lagging target, the replay holds every step but the n-step window's, both actions."""
    stats = np.asarray(state.stats)
    per_iter = config.env_steps_per_iteration
    learned = (config.total_steps - config.learning_starts) // per_iter + 1
    assert stats[2] == learned and np.isfinite(stats[:2]).all(), stats
    params, target = (
        jax.tree.leaves(state.learner.params),
        jax.tree.leaves(state.learner.target_params),
    )
    assert all(not np.array_equal(p, t) for p, t in zip(params, target, strict=True))
    assert int(state.replay.size) == config.total_steps - (config.n_step - 1) * config.num_envs
    assert set(np.unique(np.asarray(state.replay.data.action))) == {0, 1}


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["c51", "qr_dqn", "iqn", "m_dqn"])
def test_family_runs_on_gymnasium_cartpole(variant):
    config = Config(**FAMILY_GYM, variant=variant)
    assert gb.kinds_in_run(config) == {
        gb.StepKind(True, False, True),
        gb.StepKind(True, True, True),
    }
    result = gb.train(config, None, progress=False, echo=lambda _: None)
    check_learned(config, jax.tree.map(lambda x: x[0], result.state))
    assert len(result.episodes[0]) > 0


@pytest.mark.slow
def test_noisy_net_acts_by_its_noise_between_iteration_ends():
    # 1 env, train_every=4: 3 plain steps per iteration, each a call of the plain-step program
    # with the state's key and the step index. With epsilon 0 every action is the network's:
    # the plain steps must act as the agent core's act (the JAX driver's) does, with step j's
    # noise, which is not always the mean net's greedy action. (Noisy Double DQN: the acting
    # is rainbow's, its program compiles in half the time.)
    config = Config(
        **{**FAMILY_GYM, "train_every": 4, "total_steps": 400, "target_period": 4},
        variant="ddqn",
        noisy=True,
        eps_start=0.0,
        eps_end=0.0,
    )
    host = gb.make_host_agent(config)
    mean_greedy, core_act = gb.compiled_greedy(host), jax.jit(host.agent.act)
    seen = []

    class Recording(gb.Programs):
        def act(self, state, j, obs):
            actions = super().act(state, j, obs)
            params = state.learner.params  # read now: the next end program donates the state
            seen.append(
                (actions, np.asarray(mean_greedy(params, obs)), np.asarray(core_act(state, obs, j)))
            )
            return actions

    envs = gym_envs.make_vector_env(config.env, config.num_envs)
    try:
        loop = gb.Loop(host, Recording(host), envs, seed=0)
        loop.run(config.total_steps)
    finally:
        envs.close()
    assert len(seen) == 3 * config.num_iterations  # every plain step asked the device
    actions, mean_actions, core_actions = (np.concatenate(x) for x in zip(*seen, strict=True))
    np.testing.assert_array_equal(actions, core_actions)
    assert (actions != mean_actions).sum() >= 30  # measured: 119 of the 300
    state = loop.state
    check_learned(
        config,
        state._replace(
            learner=state.learner._replace(
                params=host.agent.unravel(state.learner.params),
                target_params=host.agent.unravel(state.learner.target_params),
            )
        ),
    )


def test_host_environments_of_two_seeds_and_both_roles_share_no_stream(monkeypatch):
    # Runs 0 and 1 with 2 training envs and 10 evaluation episodes each. Seeded `seed + i`, run
    # 0's env 1 was run 1's env 0, and the two runs shared 9 of their 10 evaluation episodes:
    # their start observations (distinct for distinct CartPole seeds) must all differ.
    from dqn_jax.envs.vector_env import SameStepVectorEnv

    starts = []
    reset = SameStepVectorEnv.reset

    def recording_reset(self, **kwargs):
        obs, info = reset(self, **kwargs)
        starts.append(obs.copy())
        return obs, info

    monkeypatch.setattr(SameStepVectorEnv, "reset", recording_reset)
    config = Config(**{**FAMILY_GYM, "num_envs": 2, "train_every": 2, "eval_episodes": 10})
    host = gb.make_host_agent(config)
    for seed in (0, 1):
        envs = gym_envs.make_vector_env(config.env, config.num_envs)
        try:
            loop = gb.Loop(host, gb.Programs(host), envs, seed=seed)
        finally:
            envs.close()
        gb.evaluate(host, loop.state.learner.params, config.eval_episodes, seed)
    rows = np.concatenate(starts)
    assert rows.shape == (2 * (2 + 10), 4)
    assert len(np.unique(rows, axis=0)) == len(rows)


def test_evaluation_of_fixed_policies_on_the_counter_env_gives_their_known_returns():
    # Action 0 never terminates: truncated at the limit, 1 + 2 + ... + LIMIT. Action 1
    # terminates at t = TERMINAL_FROM: 1 + 2 + ... + TERMINAL_FROM. No reward after the end.
    config = counter_config(eval_episodes=4)
    np.testing.assert_array_equal(evaluate_constant_policy(config, 0), LIMIT * (LIMIT + 1) / 2)
    want = TERMINAL_FROM * (TERMINAL_FROM + 1) / 2
    np.testing.assert_array_equal(evaluate_constant_policy(config, 1), want)


@pytest.mark.slow
def test_minatar_ids_are_the_original_protocol_with_the_gymnax_shapes():
    """``MinAtar/Breakout-v1`` (the minatar package): sticky actions 0.1 and no step cap, where
    gymnax's ``Breakout-MinAtar`` has neither; the same grid and minimal action set, so one
    network (and its parameters) serves both protocols."""
    from dqn_jax.config import from_preset
    from dqn_jax.envs.jax_envs import env_spec

    host, device = gym_envs.gymnasium_env_spec("MinAtar/Breakout-v1"), env_spec("Breakout-MinAtar")
    assert (host.obs_shape, host.num_actions) == (device.obs_shape, device.num_actions)
    assert (host.obs_shape, host.num_actions) == ((10, 10, 4), 3)
    assert (host.max_episode_steps, device.max_episode_steps) == (0, 1000)
    env = gym_envs.make_env("MinAtar/Breakout-v1")
    assert env.unwrapped.game.sticky_action_prob == 0.1 and env.observation_space.dtype == bool
    config = from_preset("MinAtar/Breakout-v1", variant="ddqn", num_envs=2, eval_episodes=4)
    config, _ = prepare(config)
    assert (config.backend, config.network) == ("gymnasium", "minatar_cnn")
    gymnax = prepare(from_preset("Breakout-MinAtar", variant="ddqn", eval_episodes=4))[0]
    assert (gymnax.backend, gymnax.network) == ("jax", "minatar_cnn")
    for c in (config, gymnax):  # never moving the paddle: one brick or none, on either protocol
        returns = evaluate_constant_policy(c, 0)
        assert returns.shape == (4,) and set(returns.tolist()) <= {0.0, 1.0}
