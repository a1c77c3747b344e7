"""The training loop on JAX environments, as pure per-seed functions.

One loop *iteration* = ``vector_steps_per_iteration`` steps of the ``num_envs`` environments
(acting epsilon-greedily and storing every transition), then ``updates_per_iteration`` gradient
updates (once ``learning_starts`` env steps are done), then a target update whenever an
``target_period`` boundary was crossed. A *chunk* is a ``lax.scan`` over iterations.

Schedules depend only on the iteration index, which is passed in *unbatched*: under
``vmap`` over seeds the "learning started?" and "update the target?" predicates stay scalar, so
``lax.cond`` really skips work instead of computing both branches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dqn_jax import envs, exploration, losses, rng
from dqn_jax.agent import (
    Learner,
    UpdateMetrics,
    annealed_lr,
    make_optimizer,
    make_update,
    td_errors,
)
from dqn_jax.agent import update_target as blend_target
from dqn_jax.config import Config
from dqn_jax.networks import MLPQNetwork
from dqn_jax.replay import Replay, Transition, uniform_replay
from dqn_jax.variants import VARIANTS


class TrainState(NamedTuple):
    """Everything that changes during a run of one seed (vmap adds a leading seed axis)."""

    learner: Learner
    replay: Any
    env_state: Any
    obs: jax.Array  # f32[num_envs, *obs_shape]
    ep_return: jax.Array  # f32[num_envs], return of the running episodes
    ep_length: jax.Array  # i32[num_envs]
    key: jax.Array
    hyper: dict  # swept hyperparameters of this run: name -> f32[] (empty without a sweep)
    probes: jax.Array | None  # f32[probe_states, *obs_shape] whose Q-values are traced, or None


class ChunkOutput(NamedTuple):
    """Per-iteration outputs of a chunk. Episode arrays are ``[iters, vsteps, num_envs]`` and hold
    the finished episode's length/return where one ended at that step, 0 elsewhere."""

    ep_length: jax.Array
    ep_return: jax.Array
    loss: jax.Array  # f32[iters], mean over the iteration's updates (0 before learning)
    q_mean: jax.Array  # f32[iters]
    q_probe: jax.Array | None  # f32[iters, probe_states, num_actions], or None without probes


class Trainer(NamedTuple):
    """The compiled-program pieces for one config; all per seed, pure, jittable, vmappable."""

    config: Config
    init: Callable[[jax.Array, dict | None], TrainState]
    prefill: Callable[[TrainState], TrainState]
    run_chunk: Callable[[TrainState, jax.Array, int], tuple[TrainState, ChunkOutput]]
    evaluate: Callable[[Any, jax.Array], jax.Array]
    apply_fn: Callable


def make_replay(config: Config) -> Replay:
    """The variant's replay buffer with the config's capacity and batch size."""
    if VARIANTS[config.variant].replay == "prioritized":
        from dqn_jax.per import prioritized_replay

        return prioritized_replay(
            config.buffer_size,
            config.batch_size,
            alpha=config.per_alpha,
            eps=config.per_eps,
            priority_on_insert=config.per_priority_on_insert,
        )
    return uniform_replay(config.buffer_size, config.batch_size)


# Config fields a sweep may vary per run inside one compiled program (traced f32 scalars).
SWEEPABLE = (
    "lr",
    "gamma",
    "eps_start",
    "eps_end",
    "eps_duration",
    "eps_decay",
    "tau",
    "target_period",
    "per_beta0",
    "per_beta_final",
)


def hp(config: Config, hyper: dict, name: str):
    """The run's value of hyperparameter ``name``: traced if swept, else the config's constant."""
    return hyper[name] if name in hyper else getattr(config, name)


def epsilon_at(config: Config, env_step, hyper: dict | None = None) -> jax.Array:
    """Exploration epsilon after ``env_step`` env steps of this run."""
    hyper = hyper or {}
    if config.variant == "random":
        return jnp.float32(1.0)
    start, end = hp(config, hyper, "eps_start"), hp(config, hyper, "eps_end")
    if config.exploration == "exponential":
        return exploration.exponential_epsilon(env_step, end, start, hp(config, hyper, "eps_decay"))
    return exploration.linear_epsilon(env_step, start, end, hp(config, hyper, "eps_duration"))


def first_learning_iteration(config: Config) -> int:
    """Index of the first iteration that ends with a gradient update."""
    return max(-(-config.learning_starts // config.env_steps_per_iteration), 1) - 1


def num_updates(config: Config) -> int:
    """Gradient updates in the whole run (for learning-rate annealing)."""
    iterations = max(config.num_iterations - first_learning_iteration(config), 0)
    return iterations * config.updates_per_iteration


def make_train(
    config: Config,
    *,
    target_fn: Callable | None = None,
    loss_fn: Callable | None = None,
    replay: Replay | None = None,
    sweep_table: dict | None = None,
    seeds_per_point: int = 1,
) -> Trainer:
    """Build the per-run functions for ``config``; ``target_fn``/``loss_fn``/``replay`` override
    the variant's choices (how experiment scripts compose their own agents).

    ``sweep_table`` maps hyperparameters (from :data:`SWEEPABLE`) to one value per run
    (``[config.num_seeds]``); run ``i`` is grid point ``i // seeds_per_point`` with seed
    ``config.seed + i % seeds_per_point``, so every point sees the same seeds.
    """
    sweep_table = {k: jnp.asarray(v, jnp.float32) for k, v in (sweep_table or {}).items()}
    unknown = sorted(set(sweep_table) - set(SWEEPABLE))
    if unknown:
        raise ValueError(f"cannot sweep {unknown}: sweepable fields are {', '.join(SWEEPABLE)}")
    for name, values in sweep_table.items():
        if values.shape != (config.num_seeds,):
            raise ValueError(f"sweep values of {name}: shape {values.shape}, want one per run")
    variant = VARIANTS[config.variant]
    learns = variant.target_fn is not None
    target_fn = target_fn or variant.target_fn
    loss_fn = loss_fn or losses.LOSSES[config.loss]
    replay = replay or make_replay(config)
    spec = envs.env_spec(config.env)
    network = MLPQNetwork(spec.num_actions, config.hidden_sizes, config.init_scheme)
    apply_fn = network.apply
    optimizer = make_optimizer(config.optimizer, config.max_grad_norm)
    update = make_update(apply_fn, optimizer, replay, target_fn, loss_fn)
    total_updates = num_updates(config)
    uses_td_on_insert = variant.replay == "prioritized" and config.per_priority_on_insert == "td"
    n_envs = config.num_envs

    def init(key: jax.Array, run_index=None) -> TrainState:
        """The state of one run; ``run_index`` (i32[]) picks its sweep values and seed."""
        hyper = {}
        if sweep_table:
            hyper = {name: values[run_index] for name, values in sweep_table.items()}
            seed = (config.seed + run_index % seeds_per_point).astype(jnp.uint32)
            key = jax.random.PRNGKey(seed)
        k_net, k_env, k_run = jax.random.split(key, 3)
        dummy_obs = jnp.zeros((1, *spec.obs_shape), jnp.float32)
        params = network.init(k_net, dummy_obs)
        learner = Learner(params, params, optimizer.init(params))
        example = Transition(
            dummy_obs[0], jnp.int32(0), jnp.float32(0), dummy_obs[0], jnp.float32(0)
        )
        obs, env_state = envs.reset(config.env, k_env, n_envs)
        probes = probe_states(jax.random.fold_in(k_env, 1))
        return TrainState(
            learner,
            replay.init(example),
            env_state,
            obs,
            jnp.zeros((n_envs,), jnp.float32),
            jnp.zeros((n_envs,), jnp.int32),
            k_run,
            hyper,
            probes,
        )

    def probe_states(key: jax.Array) -> jax.Array:
        """``probe_states`` observations evenly spaced along one random-policy rollout of the
        environment's step limit (episodes restart where they end), as in the notebook."""
        k = config.probe_states
        if k == 0:
            return None  # not a zero-size array: checkpoints cannot hold those
        k_reset, k_steps = jax.random.split(key)
        obs, env_state = envs.reset(config.env, k_reset, 1)

        def step(carry, key):
            obs, env_state = carry
            k_act, k_env = jax.random.split(key)
            action = jax.random.randint(k_act, (1,), 0, spec.num_actions)
            out = envs.step(config.env, k_env, env_state, action)
            return (out.next_obs, out.env_state), obs[0]

        horizon = max(spec.max_episode_steps, k)
        _, trajectory = jax.lax.scan(step, (obs, env_state), jax.random.split(k_steps, horizon))
        return trajectory[jnp.linspace(0, horizon - 1, k).astype(jnp.int32)]

    def insert_priority_td(state: TrainState, transitions: Transition):
        if not uses_td_on_insert:
            return None
        learner, gamma = state.learner, hp(config, state.hyper, "gamma")
        td, _ = td_errors(
            learner.params, learner.target_params, transitions, apply_fn, target_fn, gamma
        )
        return jnp.abs(td)

    def env_step(state: TrainState, env_step_index, random_policy: bool, store: bool):
        key, k_act, k_env = rng.split(state.key, 3)
        if random_policy or not learns:
            actions = rng.randint(k_act, n_envs, spec.num_actions)
        else:
            q = apply_fn(state.learner.params, state.obs)
            epsilon = epsilon_at(config, env_step_index, state.hyper)
            actions = exploration.epsilon_greedy(k_act, q, epsilon)
        out = envs.step(config.env, k_env, state.env_state, actions)
        replay_state = state.replay
        if store:
            reward = jnp.sign(out.reward) if config.clip_rewards else out.reward
            transitions = Transition(
                state.obs, actions, reward, out.final_obs, out.terminated.astype(jnp.float32)
            )
            abs_td = insert_priority_td(state, transitions)
            replay_state = replay.add(replay_state, transitions, abs_td)
        done = out.terminated | out.truncated
        ep_return = state.ep_return + out.reward
        ep_length = state.ep_length + 1
        finished = (jnp.where(done, ep_length, 0), jnp.where(done, ep_return, 0.0))
        state = state._replace(
            replay=replay_state,
            env_state=out.env_state,
            obs=out.next_obs,
            ep_return=jnp.where(done, 0.0, ep_return),
            ep_length=jnp.where(done, 0, ep_length),
            key=key,
        )
        return state, finished

    def learn(state: TrainState, it) -> tuple[TrainState, UpdateMetrics]:
        hyper, upi = state.hyper, config.updates_per_iteration
        progress = jnp.minimum((it + 1) * config.env_steps_per_iteration / config.total_steps, 1.0)
        beta0, beta1 = hp(config, hyper, "per_beta0"), hp(config, hyper, "per_beta_final")
        beta = beta0 + (beta1 - beta0) * progress
        gamma, lr = hp(config, hyper, "gamma"), hp(config, hyper, "lr")
        key, *update_keys = rng.split(state.key, upi + 1)
        first_index = (it - first_learning_iteration(config)) * upi

        def one_update(carry, xs):
            learner, replay_state = carry
            k, index = xs
            lr_now = annealed_lr(lr, index, total_updates, config.anneal_lr)
            learner, replay_state, metrics = update(learner, replay_state, k, beta, gamma, lr_now)
            return (learner, replay_state), metrics

        (learner, replay_state), metrics = jax.lax.scan(
            one_update,
            (state.learner, state.replay),
            (jnp.stack(update_keys), first_index + jnp.arange(upi)),
        )
        metrics = jax.tree.map(jnp.mean, metrics)
        return state._replace(learner=learner, replay=replay_state, key=key), metrics

    def iteration(state: TrainState, it):
        """One loop iteration; ``it`` is the unbatched global iteration index."""
        per_iter = config.env_steps_per_iteration
        first_env_step = it * per_iter + n_envs * jnp.arange(config.vector_steps_per_iteration)
        state, (ep_len, ep_ret) = jax.lax.scan(
            lambda s, i: env_step(s, i, random_policy=False, store=learns), state, first_env_step
        )
        done_steps = (it + 1) * per_iter
        zero = UpdateMetrics(jnp.float32(0.0), jnp.float32(0.0))
        if learns:
            state, metrics = jax.lax.cond(
                done_steps >= config.learning_starts, learn, lambda s, _: (s, zero), state, it
            )
            if variant.uses_target_net:
                # Unbatched (a real branch) unless target_period is swept: then a cheap select.
                period = hp(config, state.hyper, "target_period")
                crossed = done_steps // period != (done_steps - per_iter) // period
                tau = hp(config, state.hyper, "tau")
                learner = jax.lax.cond(
                    crossed, lambda lr: blend_target(lr, tau), lambda lr: lr, state.learner
                )
                state = state._replace(learner=learner)
        else:
            metrics = zero
        q_probe = apply_fn(state.learner.params, state.probes) if config.probe_states else None
        return state, ChunkOutput(ep_len, ep_ret, metrics.loss, metrics.q_mean, q_probe)

    def run_chunk(state: TrainState, start_iteration, num_iterations: int):
        """Run iterations ``start_iteration .. start_iteration + num_iterations - 1``."""
        its = start_iteration + jnp.arange(num_iterations, dtype=jnp.int32)
        return jax.lax.scan(iteration, state, its)

    def prefill(state: TrainState) -> TrainState:
        """Store ``prefill_episodes`` (or up to num_envs - 1 more) random-agent episodes, then
        reset the environments. Counts toward no schedule and no report."""
        if config.prefill_episodes == 0 or not learns:
            return state

        def body(carry):
            s, episodes = carry
            s, (ep_len, _) = env_step(s, 0, random_policy=True, store=True)
            return s, episodes + jnp.sum(ep_len > 0)

        state, _ = jax.lax.while_loop(
            lambda carry: carry[1] < config.prefill_episodes, body, (state, jnp.int32(0))
        )
        key, k_env = rng.split(state.key)
        obs, env_state = envs.reset(config.env, k_env, n_envs)
        return state._replace(
            env_state=env_state,
            obs=obs,
            ep_return=jnp.zeros_like(state.ep_return),
            ep_length=jnp.zeros_like(state.ep_length),
            key=key,
        )

    def evaluate(params, key: jax.Array) -> jax.Array:
        """Greedy returns ``f32[eval_episodes]``: each episode in its own environment, run for
        the environment's step limit; rewards after an episode's end are not counted."""
        n = config.eval_episodes
        k_reset, k_steps = jax.random.split(key)
        obs, env_state = envs.reset(config.env, k_reset, n)

        def step(carry, k):
            obs, env_state, total, alive = carry
            actions = jnp.argmax(apply_fn(params, obs), axis=-1).astype(jnp.int32)
            out = envs.step(config.env, k, env_state, actions)
            total = total + jnp.where(alive, out.reward, 0.0)
            alive = alive & ~(out.terminated | out.truncated)
            return (out.next_obs, out.env_state, total, alive), None

        init = (obs, env_state, jnp.zeros((n,), jnp.float32), jnp.ones((n,), bool))
        keys = jax.random.split(k_steps, spec.max_episode_steps)
        (_, _, total, _), _ = jax.lax.scan(step, init, keys)
        return total

    return Trainer(config, init, prefill, run_chunk, evaluate, apply_fn)
