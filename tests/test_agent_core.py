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
from dqn_jax.host_loop import Loop, Programs, make_host_agent, scheduler

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


@pytest.mark.parametrize("variant", [pytest.param("ddqn", marks=pytest.mark.slow), "ddqn_per"])
def test_learner_step_is_bit_identical_whichever_driver_calls_it(variant):
    # The JAX driver keeps parameters as a pytree, the host driver as one flat vector; the
    # same key, the same stored steps and the same schedule must give the same bits.
    device, host = agents(variant=variant, per_priority_on_insert="td")
    key = core.split_run_key(jax.random.PRNGKey(3))[0]
    s_dev, s_host = jax.jit(device.init)(key), jax.jit(host.init)(key)
    np.testing.assert_array_equal(ravel_pytree(s_dev.learner.params)[0], s_host.learner.params)

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
        *zip(jax.tree.leaves(s_dev.replay), jax.tree.leaves(s_host.replay), strict=True),
    ]:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(s_dev.stats[2]) == 30.0  # every call learned


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
