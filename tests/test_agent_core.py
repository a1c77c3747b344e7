"""The agent core serves both drivers: parity of the learner step and of the schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from dqn_jax import agent as core
from dqn_jax.agent import EnvSteps
from dqn_jax.config import Config, ConfigError
from dqn_jax.device_loop import make_train
from dqn_jax.envs import prepare
from dqn_jax.host_loop import (
    PLAIN,
    Loop,
    Programs,
    compiled,
    compiled_greedy,
    make_host_agent,
    scheduler,
)

# CartPole-v1 exists on both backends: the same config builds both drivers' agents.
BASE = dict(
    env="CartPole-v1",
    num_envs=2,
    train_every=4,  # 2 vector steps per iteration, 1 update each
    total_steps=400,
    learning_starts=50,  # not a multiple of the 4 env steps of an iteration
    target_period=30,  # crossings fall inside iterations
    batch_size=16,
    buffer_size=256,
    hidden_sizes=(16,),
    num_chunks=2,
    eval_episodes=0,
    eps_duration=200,
)


def agents(**changes):
    device = make_train(Config(**BASE, **changes, backend="jax")).agent
    host = make_host_agent(Config(**BASE, **changes, backend="gymnasium")).agent
    return device, host


def random_steps(rng, v, n, obs_dim=4) -> EnvSteps:
    return EnvSteps(
        rng.normal(size=(v, n, obs_dim)).astype(np.float32),
        rng.integers(0, 2, (v, n)).astype(np.int32),
        rng.normal(size=(v, n)).astype(np.float32),
        rng.normal(size=(v, n, obs_dim)).astype(np.float32),
        (rng.random((v, n)) < 0.2).astype(np.float32),
        (rng.random((v, n)) < 0.3).astype(np.float32),
    )


# Small heads: the family's programs compile in seconds (fields only their variant reads).
FAMILY = dict(
    num_atoms=11,
    num_quantiles=8,
    num_tau_samples=8,
    num_tau_prime_samples=8,
    num_quantile_samples=8,
)


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param("ddqn", marks=pytest.mark.slow),
        pytest.param("ddqn_per", marks=pytest.mark.slow),
        # C51 + dueling + noisy + PER + 3-step returns
        pytest.param("rainbow", marks=pytest.mark.slow),
        pytest.param("iqn", marks=pytest.mark.slow),
        pytest.param("m_dqn", marks=pytest.mark.slow),
        pytest.param("qr_dqn", marks=pytest.mark.slow),
    ],
)
def test_learner_step_is_bit_identical_whichever_driver_calls_it(variant):
    # The JAX driver keeps parameters as a pytree, the host driver as one flat vector; the
    # same key, the same stored steps and the same schedule must give the same bits (noisy
    # layers and IQN's fractions draw from the same keys; priorities on insert run the head).
    device, host = agents(variant=variant, per_priority_on_insert="td", **FAMILY)
    key = core.split_run_key(jax.random.PRNGKey(3))[0]
    s_dev, s_host = jax.jit(device.init)(key), jax.jit(host.init)(key)
    np.testing.assert_array_equal(ravel_pytree(s_dev.learner.params)[0], s_host.learner.params)
    initial = np.asarray(s_host.learner.params)

    def end(agent):
        return jax.jit(lambda s, steps, done: agent.end_iteration(s, steps, done, True, True))

    end_dev, end_host = end(device), end(host)
    rng = np.random.default_rng(0)
    for i in range(30):
        steps, done = random_steps(rng, 2, 2), jnp.int32(4 * (i + 1))
        s_dev, s_host = end_dev(s_dev, steps, done), end_host(s_host, steps, done)
    for a, b in [
        (ravel_pytree(s_dev.learner.params)[0], s_host.learner.params),
        (ravel_pytree(s_dev.learner.target_params)[0], s_host.learner.target_params),
        (s_dev.stats, s_host.stats),
        *zip(jax.tree.leaves(s_dev.returns), jax.tree.leaves(s_host.returns), strict=True),
        *zip(jax.tree.leaves(s_dev.replay), jax.tree.leaves(s_host.replay), strict=True),
    ]:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(s_dev.stats[2]) == 30.0  # every call learned
    assert np.isfinite(float(s_dev.stats[0])) and not np.array_equal(initial, s_host.learner.params)
    # An n-step accumulator stores each env's steps n - 1 vector steps late.
    assert int(s_dev.replay.size) == 30 * 4 - (device.config.n_step - 1) * 2


def acting_probe(agent, key, obs):
    """What one agent acts with, at the first iteration of the state of ``key`` (one jitted
    program): Q-values for ``obs`` with the acting keys of steps 0 and 1 and without a key,
    ``act`` at steps 0 and 1 (on 2 observations each) and those Q-values, and ``greedy`` (key
    None). (IQN draws fractions per observation: Q-values depend on the batch.)"""

    @jax.jit
    def probe(key, obs):
        state = agent.begin_iteration(agent.init(key), 0)
        params = state.learner.params
        noisy = [agent.q_values(params, obs, core.act_key(state.key, j)) for j in range(2)]
        pairs = [obs[2 * j : 2 * j + 2] for j in range(2)]
        acts = [agent.act(state, pairs[j], j) for j in range(2)]
        pair_q = [agent.q_values(params, pairs[j], core.act_key(state.key, j)) for j in range(2)]
        mean_q = agent.q_values(params, obs)
        return state, noisy, mean_q, (acts, pair_q), agent.greedy(params, obs)

    return jax.tree.map(np.asarray, probe(key, obs))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["rainbow", "iqn"])
def test_stochastic_acting_is_the_same_on_both_drivers_and_drawn_per_step(variant):
    # Noisy layers (rainbow) and IQN's sampled fractions: both drivers act with the draw of
    # act_key(state key, j), the host's plain-step program included; evaluation's greedy (key
    # None: mean weights, midpoint fractions) is deterministic.
    changes = dict(variant=variant, eps_start=0.0, eps_end=0.0, **FAMILY)
    device = make_train(Config(**BASE, **changes, backend="jax")).agent
    host_agent = make_host_agent(Config(**BASE, **changes, backend="gymnasium"))
    assert device.stochastic and host_agent.agent.stochastic
    key = core.split_run_key(jax.random.PRNGKey(5))[0]
    obs = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
    dev, host = acting_probe(device, key, obs), acting_probe(host_agent.agent, key, obs)
    for a, b in zip(jax.tree.leaves(dev[1:]), jax.tree.leaves(host[1:]), strict=True):
        np.testing.assert_array_equal(a, b)
    state, noisy_q, mean_q, (acts, pair_q), greedy = host
    assert (state.plan == -1).all()  # epsilon 0: every action is the network's
    for j in range(2):  # act is the argmax of that step's draw
        np.testing.assert_array_equal(acts[j], pair_q[j].argmax(-1))
    assert not np.array_equal(noisy_q[0], noisy_q[1])  # another step, another draw
    mean_actions = mean_q.argmax(-1)
    np.testing.assert_array_equal(greedy, mean_actions)
    # The draws change decisions: some observation gets another action than the mean net's.
    assert any((q.argmax(-1) != mean_actions).any() for q in noisy_q)
    # The host loop's own programs: the plain step draws step j's noise; evaluation's greedy
    # is the mean net's, call after call.
    plain_step, evaluation = compiled(host_agent, PLAIN), compiled_greedy(host_agent)
    params = jax.device_put(state.learner.params)
    for j in range(2):
        np.testing.assert_array_equal(plain_step(params, state.key, j, obs), noisy_q[j].argmax(-1))
        np.testing.assert_array_equal(evaluation(params, obs), mean_actions)


def test_exploration_none_never_explores():
    # exploration "none" (rainbow's default: noisy nets explore by their noise) is epsilon 0 at
    # every step; the linear schedule comes back when asked for.
    config = Config(**BASE, variant="rainbow")
    assert config.exploration == "none"
    assert [float(core.epsilon_at(config, s)) for s in (0, 10_000, 10**6)] == [0.0, 0.0, 0.0]
    asked = Config(**BASE, variant="rainbow", exploration="linear")
    assert float(core.epsilon_at(asked, 0)) == asked.eps_start


def test_schedules_agree_step_by_step_across_drivers():
    config = prepare(Config(**BASE, backend="jax"))[0]
    per_iter = config.env_steps_per_iteration
    iters = jnp.arange(config.num_iterations)
    done = (iters + 1) * per_iter
    # The JAX driver evaluates the schedules traced; the host scheduler with Python ints.
    learn = jax.jit(jax.vmap(lambda d: jnp.asarray(core.learning_due(config, d))))(done)
    copy = jax.jit(jax.vmap(lambda d: jnp.asarray(core.target_due(config, d))))(done)
    beta = jax.jit(jax.vmap(lambda d: core.beta_at(config, d)))(done)
    kind_after = scheduler(config)
    vspi = config.vector_steps_per_iteration
    for it in range(config.num_iterations):
        for j in range(vspi - 1):
            assert not kind_after(it * vspi + j).end
        kind = kind_after((it + 1) * vspi - 1)
        assert kind.end and (kind.learn, kind.copy_target) == (bool(learn[it]), bool(copy[it]))
        d = (it + 1) * per_iter
        np.testing.assert_allclose(float(beta[it]), core.beta_at(config, d), rtol=1e-6)
        assert kind.learn == (d >= 50)  # learning starts at the iteration that passes 50
        assert kind.copy_target == (d // 30 != (d - per_iter) // 30)
    assert 0 < int(copy.sum()) < config.num_iterations and not learn[11] and learn[12]


def test_exploration_plans_agree_across_drivers_at_every_iteration():
    device, host = agents(variant="ddqn")
    key = core.split_run_key(jax.random.PRNGKey(7))[0]
    s_dev, s_host = device.init(key), host.init(key)
    begin_dev, begin_host = jax.jit(device.begin_iteration), jax.jit(host.begin_iteration)
    explored = []
    for it in range(0, 100, 5):
        s_dev, s_host = begin_dev(s_dev, it * 4), begin_host(s_host, it * 4)
        np.testing.assert_array_equal(s_dev.plan, s_host.plan)
        explored.append(float((np.asarray(s_dev.plan) >= 0).mean()))
    # epsilon decays 1 -> 0.05 over 200 env steps: first all explore, at the end few do
    assert explored[0] == 1.0 and np.mean(explored[-5:]) < 0.3


@pytest.mark.slow
def test_both_drivers_start_learning_at_the_same_iteration():
    # A real run of each driver: the iterations that learned in the first chunk (the agent's
    # own count) are the same, whatever the environments did.
    config = Config(**BASE, variant="ddqn")
    trainer = make_train(config.replace(backend="jax"))
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    iters = config.num_iterations // 2
    state, _ = jax.jit(trainer.run_chunk, static_argnums=2)(state, jnp.int32(0), iters)
    host = make_host_agent(config.replace(backend="gymnasium"))
    from dqn_jax.envs import gym_envs

    envs = gym_envs.make_vector_env(config.env, config.num_envs)
    try:
        loop = Loop(host, Programs(host), envs, seed=0)
        loop.run(iters * config.vector_steps_per_iteration)
    finally:
        envs.close()
    learned = iters - core.first_learning_iteration(config)
    assert float(state.agent.stats[2]) == float(loop.state.stats[2]) == learned


def test_host_backend_refuses_fields_it_cannot_honour():
    with pytest.raises(ConfigError, match="probe_states=4 is invalid: must be 0 with backend"):
        prepare(Config(**BASE, backend="gymnasium", probe_states=4))
    with pytest.raises(ConfigError, match="prefill_episodes=3 is invalid"):
        prepare(Config(**BASE, backend="gymnasium", prefill_episodes=3))
    with pytest.raises(ConfigError, match="network='nature_cnn' needs observations"):
        prepare(Config(**BASE, backend="jax", network="nature_cnn"))
    assert prepare(Config(env="CartPole-v1"))[0].backend == "jax"
    assert prepare(Config(env="CartPole-v1", backend="gymnasium"))[0].backend == "gymnasium"
