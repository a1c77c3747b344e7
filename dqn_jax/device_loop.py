"""The JAX driver: gymnax environments and the agent core in one compiled program, per seed.

One loop *iteration* is the agent core's (:mod:`dqn_jax.agent`): ``begin_iteration``, then
``vector_steps_per_iteration`` steps of the ``num_envs`` environments (``act``, step, record),
then ``end_iteration`` (store, learn once ``learning_starts`` env steps are done, update the
target when a ``target_period`` boundary was crossed). A *chunk* is a ``lax.scan`` over
iterations; :mod:`dqn_jax.run` compiles ``jit(vmap(run_chunk))`` (as :func:`run_chunk_of_seeds`)
and calls it chunk by chunk.

Schedules depend only on the iteration index, which is passed in *unbatched*: under ``vmap``
over seeds the "learning started?" and "update the target?" predicates stay scalar, so
``lax.cond`` really skips work instead of computing both branches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dqn_jax import agent as core
from dqn_jax import rng
from dqn_jax.agent import Agent, AgentState, EnvSteps, make_agent
from dqn_jax.config import Config, ConfigError
from dqn_jax.envs import EnvSpec, jax_envs, prepare
from dqn_jax.exploration import exploration_plan
from dqn_jax.variants import learns


class EnvState(NamedTuple):
    """The environments of one run and their running episodes."""

    env_state: Any
    obs: jax.Array  # f32[num_envs, *obs_shape]
    ep_return: jax.Array  # f32[num_envs], return of the running episodes
    ep_length: jax.Array  # i32[num_envs]
    key: jax.Array  # the environments' own key stream


class TrainState(NamedTuple):
    """Everything that changes during a run of one seed (vmap adds a leading seed axis)."""

    agent: AgentState
    env: EnvState
    probes: jax.Array | None  # f32[probe_states, *obs_shape] whose Q-values are traced, or None


class ChunkOutput(NamedTuple):
    """Per-iteration outputs of a chunk. Episode arrays are ``[iters, vsteps, num_envs]`` and hold
    the finished episode's length/return where one ended at that step, 0 elsewhere."""

    ep_length: jax.Array
    ep_return: jax.Array
    q_probe: jax.Array | None  # f32[iters, probe_states, num_actions], or None without probes


class Trainer(NamedTuple):
    """The compiled-program pieces for one config; all per seed, pure, jittable, vmappable."""

    config: Config
    spec: EnvSpec
    agent: Agent
    init: Callable[[jax.Array, Any], TrainState]
    prefill: Callable[[TrainState], TrainState]
    run_chunk: Callable[[TrainState, jax.Array, int], tuple[TrainState, ChunkOutput]]
    evaluate: Callable[[Any, jax.Array], jax.Array]
    # one loop iteration ``(state, it) -> (state, outputs)``, ``it`` the unbatched index
    iteration: Callable[[TrainState, jax.Array], tuple[TrainState, ChunkOutput]]
    seeds_per_point: int | None = None  # run i's seed: ``config.seed + i % seeds_per_point``
    # in a sweep; None (a plain run): ``config.seed + i``


def check_sweep_table(config: Config, sweep_table: dict) -> dict:
    """``sweep_table`` as ``f32[num_seeds]`` arrays; ``ValueError`` for an unsweepable name or
    a wrong length."""
    table = {k: jnp.asarray(v, jnp.float32) for k, v in (sweep_table or {}).items()}
    unknown = sorted(set(table) - set(core.SWEEPABLE))
    if unknown:
        raise ValueError(
            f"cannot sweep {unknown}: sweepable fields are {', '.join(core.SWEEPABLE)}"
        )
    for name, values in table.items():
        if values.shape != (config.num_seeds,):
            raise ValueError(f"sweep values of {name}: shape {values.shape}, want one per run")
    return table


def reset_envs(config: Config, key: jax.Array) -> EnvState:
    """``num_envs`` freshly reset environments and their own key stream."""
    k_reset, env_key = jax.random.split(key)
    obs, env_state = jax_envs.reset(config.env, k_reset, config.num_envs)
    zeros = jnp.zeros((config.num_envs,), jnp.float32)
    return EnvState(env_state, obs, zeros, zeros.astype(jnp.int32), env_key)


def env_step(config: Config, state: EnvState, key: jax.Array, actions: jax.Array):
    """Step the environments: ``(state, EnvSteps of one vector step, finished)`` where
    ``finished`` = (length, return) of the episodes that ended (0 elsewhere), ``[num_envs]``."""
    out = jax_envs.step(config.env, key, state.env_state, actions)
    done = out.terminated | out.truncated
    steps = EnvSteps(
        state.obs,
        actions,
        out.reward,
        out.final_obs,
        out.terminated.astype(jnp.float32),
        done.astype(jnp.float32),
    )
    ep_return, ep_length = state.ep_return + out.reward, state.ep_length + 1
    finished = (jnp.where(done, ep_length, 0), jnp.where(done, ep_return, 0.0))
    state = state._replace(
        env_state=out.env_state,
        obs=out.next_obs,
        ep_return=jnp.where(done, 0.0, ep_return),
        ep_length=jnp.where(done, 0, ep_length),
    )
    return state, steps, finished


def probe_states(config: Config, spec: EnvSpec, key: jax.Array) -> jax.Array | None:
    """``probe_states`` observations evenly spaced along one random-policy rollout of the
    environment's step limit (episodes restart where they end), as in the notebook."""
    k = config.probe_states
    if k == 0:
        return None  # not a zero-size array: checkpoints cannot hold those
    k_reset, k_steps = jax.random.split(key)
    obs, env_state = jax_envs.reset(config.env, k_reset, 1)

    def step(carry, key):
        obs, env_state = carry
        k_act, k_env = jax.random.split(key)
        action = jax.random.randint(k_act, (1,), 0, spec.num_actions)
        out = jax_envs.step(config.env, k_env, env_state, action)
        return (out.next_obs, out.env_state), obs[0]

    horizon = max(spec.max_episode_steps, k)
    _, trajectory = jax.lax.scan(step, (obs, env_state), jax.random.split(k_steps, horizon))
    return trajectory[jnp.linspace(0, horizon - 1, k).astype(jnp.int32)]


def make_prefill(config: Config, spec: EnvSpec, agent: Agent) -> Callable:
    """``prefill(state) -> state``: store ``prefill_episodes`` (or up to num_envs - 1 more)
    random-agent episodes, then reset the environments. Counts toward no schedule and no
    report."""

    def prefill(state: TrainState) -> TrainState:
        if config.prefill_episodes == 0 or not learns(config.variant):
            return state

        def body(carry):
            agent_state, env, episodes, count = carry
            env_key, k_act, k_env = rng.split(env.key, 3)
            actions = rng.randint(k_act, config.num_envs, spec.num_actions)
            env, steps, (ep_len, _) = env_step(config, env._replace(key=env_key), k_env, actions)
            agent_state = agent.store(agent_state, jax.tree.map(lambda x: x[None], steps), count)
            return agent_state, env, episodes + jnp.sum(ep_len > 0), count + 1

        agent_state, env, _, _ = jax.lax.while_loop(
            lambda carry: carry[2] < config.prefill_episodes,
            body,
            (state.agent, state.env, jnp.int32(0), jnp.int32(0)),
        )
        fresh = reset_envs(config, rng.split(env.key)[1])
        return state._replace(agent=agent.restart_returns(agent_state), env=fresh)

    return prefill


def make_evaluate(config: Config, spec: EnvSpec, agent: Agent) -> Callable:
    """``evaluate(params, key) -> f32[eval_episodes]``: greedy returns (epsilon-greedy with
    ``config.eval_epsilon`` > 0), each episode in its own environment, run for the environment's
    step limit; rewards after an episode's end are not counted."""
    eps = config.eval_epsilon

    def evaluate(params, key: jax.Array) -> jax.Array:
        episodes = config.eval_episodes
        k_reset, k_steps = jax.random.split(key)
        obs, env_state = jax_envs.reset(config.env, k_reset, episodes)

        def step(carry, k):
            obs, env_state, total, alive = carry
            actions = agent.greedy(params, obs)
            if eps > 0:  # greedy evaluation keeps its keys (and its results) unchanged
                k, k_eps = jax.random.split(k)
                uniforms = jax.random.uniform(k_eps, (1, 2, episodes))
                plan = exploration_plan(uniforms, jnp.full((1,), eps), spec.num_actions)
                actions = jnp.where(plan[0] >= 0, plan[0], actions)
            out = jax_envs.step_to_episode_end(config.env, k, env_state, actions)
            total = total + jnp.where(alive, out.reward, 0.0)
            alive = alive & ~(out.terminated | out.truncated)
            return (out.next_obs, out.env_state, total, alive), None

        init = (obs, env_state, jnp.zeros((episodes,), jnp.float32), jnp.ones((episodes,), bool))
        keys = jax.random.split(k_steps, spec.max_episode_steps)
        (_, _, total, _), _ = jax.lax.scan(step, init, keys)
        return total

    return evaluate


def make_train(
    config: Config,
    *,
    sweep_table: dict | None = None,
    seeds_per_point: int = 1,
    **swaps,
) -> Trainer:
    """Build the per-run functions for ``config`` on the JAX backend. ``swaps`` go to
    :func:`dqn_jax.agent.make_agent` (``network``, ``head``, ``target_fn``, ``loss_fn``,
    ``replay``, ``returns``, ``epsilon``): how experiment scripts compose their own agents.

    ``sweep_table`` maps hyperparameters (from :data:`dqn_jax.agent.SWEEPABLE`) to one value
    per run (``[config.num_seeds]``); run ``i`` is grid point ``i // seeds_per_point`` with seed
    ``config.seed + i % seeds_per_point``, so every point sees the same seeds (the driver keys
    each run's ``init`` and evaluation by that seed: :func:`dqn_jax.run.run_seeds`).
    """
    config, spec = prepare(config)
    if config.backend != "jax":
        raise ConfigError(
            f"env={config.env!r} runs on backend={config.backend!r}: use dqn_jax.host_loop"
        )
    table = check_sweep_table(config, sweep_table)
    agent = make_agent(config, spec, **swaps)
    vspi, per_iter = config.vector_steps_per_iteration, config.env_steps_per_iteration

    def init(key: jax.Array, run_index=None) -> TrainState:
        """The state of one run from its seed's key; ``run_index`` (i32[]) picks its sweep
        values."""
        hyper = {}
        if table:
            hyper = {name: values[run_index] for name, values in table.items()}
        k_agent, k_env, k_probe = core.split_run_key(key)
        probes = probe_states(config, spec, k_probe)
        return TrainState(agent.init(k_agent, hyper), reset_envs(config, k_env), probes)

    def iteration(state: TrainState, it):
        """One loop iteration; ``it`` is the unbatched global iteration index."""
        agent_state = agent.begin_iteration(state.agent, it * per_iter)
        env_key, *step_keys = rng.split(state.env.key, vspi + 1)

        def vector_step(env: EnvState, xs):
            j, key = xs
            env, steps, finished = env_step(config, env, key, agent.act(agent_state, env.obs, j))
            return env, (steps, finished)

        env, (steps, (ep_len, ep_ret)) = jax.lax.scan(
            vector_step, state.env, (jnp.arange(vspi), jnp.stack(step_keys))
        )
        done_steps = (it + 1) * per_iter
        learn_now = core.learning_due(config, done_steps)
        copy_now = core.target_due(config, done_steps, agent_state.hyper)
        agent_state = agent.end_iteration(agent_state, steps, done_steps, learn_now, copy_now)
        params = agent_state.learner.params
        q_probe = agent.q_values(params, state.probes) if config.probe_states else None
        state = state._replace(agent=agent_state, env=env._replace(key=env_key))
        return state, ChunkOutput(ep_len, ep_ret, q_probe)

    def run_chunk(state: TrainState, start_iteration, num_iterations: int):
        """Run iterations ``start_iteration .. start_iteration + num_iterations - 1`` (the
        agent's chunk statistics start from zero)."""
        state = state._replace(agent=core.reset_stats(state.agent))
        return jax.lax.scan(iteration, state, iteration_indices(start_iteration, num_iterations))

    prefill, evaluate = make_prefill(config, spec, agent), make_evaluate(config, spec, agent)
    spp = seeds_per_point if table else None
    return Trainer(config, spec, agent, init, prefill, run_chunk, evaluate, iteration, spp)


def iteration_indices(start_iteration, num_iterations: int) -> jax.Array:
    """``i32[num_iterations]``: the global indices of a chunk's iterations."""
    return start_iteration + jnp.arange(num_iterations, dtype=jnp.int32)


def run_chunk_of_seeds(trainer: Trainer, state: TrainState, start_iteration, num_iterations: int):
    """``vmap(trainer.run_chunk, in_axes=(0, None, None))``: the chunk of every seed of
    ``state`` (leading seed axis; outputs ``[seeds, iterations, ...]``), written as a scan over
    the vmapped iteration (it traces faster: vmapping a scan batches its body's jaxpr once more
    after tracing it). A single seed runs the iteration unbatched: the same computation, which
    XLA may round differently in the last bits."""
    if jax.tree.leaves(state)[0].shape[0] == 1:
        # One seed: its chunk unbatched. XLA:CPU ran the reductions of a LayerNorm's gradient
        # several times slower with the unit seed axis (see the README's PQN figures).
        one = jax.tree.map(lambda x: x[0], state)
        out = trainer.run_chunk(one, start_iteration, num_iterations)
        return jax.tree.map(lambda x: x[None], out)
    state = state._replace(agent=jax.vmap(core.reset_stats)(state.agent))
    its = iteration_indices(start_iteration, num_iterations)
    state, out = jax.lax.scan(jax.vmap(trainer.iteration, in_axes=(0, None)), state, its)
    return state, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), out)
