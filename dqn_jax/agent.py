"""The agent core: acting, storing, learning and their schedules, once, for both drivers.

Everything here runs on the device as pure functions over an :class:`AgentState` (one run;
``vmap`` adds a seed axis). A driver owns the environments and calls, per loop *iteration*
(``V = vector_steps_per_iteration`` steps of the ``N = num_envs`` environments)::

    state = agent.begin_iteration(state, first_env_step)    # draw the iteration's exploration
    for j in range(V):                                       # the driver's environments
        actions = agent.act(state, obs, j)
        ... step the environments, record EnvSteps ...
    state = agent.end_iteration(state, steps, done_steps, learn, copy_target)
                                      # store the V*N transitions, learn, update the target
                                      # (pqn: learn from the V*N transitions themselves)

The JAX driver (:mod:`dqn_jax.device_loop`) scans this with gymnax inside the program; the host
driver (:mod:`dqn_jax.host_loop`) steps Gymnasium environments in Python and jits the same
calls. ``learn`` and ``copy_target`` come from :func:`learning_due` and :func:`target_due`:
traced (unbatched) scalars in the JAX driver, where they become a real ``lax.cond``, Python
bools in the host driver, which compiles one program per combination.

The swap points are explicit arguments of :func:`make_agent`: ``network`` (any flax module),
``head`` (what the output means and its loss, :mod:`dqn_jax.heads`), ``replay``
(:mod:`dqn_jax.replay`, :mod:`dqn_jax.per`, :mod:`dqn_jax.frame_replay`), ``returns``
(:mod:`dqn_jax.returns`: one-step or an accumulator such as n-step) and ``epsilon`` (the
exploration schedule).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from dqn_jax import exploration, losses, pqn, rng
from dqn_jax.config import Config
from dqn_jax.envs import EnvSpec
from dqn_jax.exploration import act_from_plan, exploration_plan
from dqn_jax.heads import Head, scalar_head
from dqn_jax.learner import (
    Learner,
    annealed_lr,
    loss_terms,
    make_optimizer,
    make_update,
    update_target,
)
from dqn_jax.networks import make_network
from dqn_jax.replay import Replay, Transition, example_transition, uniform_replay
from dqn_jax.returns import Returns, n_step
from dqn_jax.variants import VARIANTS, learns, make_head

EVAL_STREAM = 0x5EED
"""Evaluation draws from its own stream (key ``fold_in(run key, EVAL_STREAM)``, host
environments seeded from it), so evaluating never changes training."""

PRIORITY_STREAM = 0x9A1
"""Priority on insert evaluates the head's loss with ``fold_in(state key, PRIORITY_STREAM)``."""

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
    "q_lambda",
)


class EnvSteps(NamedTuple):
    """What a driver saw over one iteration, ``[V, N, ...]`` (time-major) each."""

    obs: jax.Array  # [V, N, *obs_shape], the observation acted on
    action: jax.Array  # i32[V, N]
    reward: jax.Array  # f32[V, N], raw
    next_obs: jax.Array  # [V, N, *obs_shape], the true next one (an ended episode's final obs)
    terminated: jax.Array  # f32[V, N], 1.0 = terminal (no bootstrap)
    done: jax.Array  # f32[V, N], 1.0 = the episode ended (terminated or truncated)


class AgentState(NamedTuple):
    """Everything of one run the agent changes."""

    learner: Learner
    replay: Any  # the replay's state (None for pqn, which learns from each rollout)
    returns: Any  # the returns accumulator's state (None for one-step returns and pqn)
    plan: jax.Array  # i32[V, N]: this iteration's random action, or -1 = act greedily
    stats: jax.Array  # f32[4] since reset_stats: loss sum, Q sum, iterations learned, non-finite
    key: jax.Array
    hyper: dict  # swept hyperparameters of this run: name -> f32[] (empty without a sweep)


class Agent(NamedTuple):
    """The pure functions of one agent (see the module doc); built by :func:`make_agent`."""

    config: Config
    spec: EnvSpec
    apply_fn: Callable  # (params, obs [B, *obs_shape], key=None, **kw) -> output [B, ...]
    init: Callable[..., AgentState]  # (key, hyper=None) -> AgentState
    q_values: Callable[..., jax.Array]  # (params, obs [N, ...], key=None) -> f32[N, A]
    greedy: Callable[..., jax.Array]  # (params, obs [N, ...], key=None) -> i32[N]
    act: Callable[[AgentState, jax.Array, Any], jax.Array]  # (state, obs, j) -> i32[N]
    begin_iteration: Callable[[AgentState, Any], AgentState]
    store: Callable[[AgentState, EnvSteps, Any], AgentState]
    end_iteration: Callable[..., AgentState]
    restart_returns: Callable[[AgentState], AgentState]  # forget pending steps (envs were reset)
    unravel: Callable | None  # flat parameter vector -> the network's pytree (flat_params only)
    stochastic: bool  # acting draws from a key (noisy layers, IQN fractions): see act_key


# ----------------------------------------------------------------------------- schedules
# Pure functions of the config and an env-step count; Python ints in, Python values out on the
# host, traced scalars in, traced scalars out on the device: both drivers use these.


def hp(config: Config, hyper: dict | None, name: str):
    """The run's value of hyperparameter ``name``: traced if swept, else the config's constant."""
    return hyper[name] if hyper and name in hyper else getattr(config, name)


def epsilon_at(config: Config, env_step, hyper: dict | None = None) -> jax.Array:
    """Exploration epsilon after ``env_step`` env steps of this run (1 for the random agent)."""
    if config.variant == "random":
        return jnp.float32(1.0)
    if config.exploration == "none":  # noisy nets: their noise is the exploration
        return jnp.float32(0.0)
    start, end = hp(config, hyper, "eps_start"), hp(config, hyper, "eps_end")
    if config.eps_after_learning_starts:
        env_step = jnp.maximum(jnp.asarray(env_step, jnp.float32) - config.learning_starts, 0.0)
    if config.exploration == "exponential":
        return exploration.exponential_epsilon(env_step, end, start, hp(config, hyper, "eps_decay"))
    return exploration.linear_epsilon(env_step, start, end, hp(config, hyper, "eps_duration"))


def beta_at(config: Config, done_steps, hyper: dict | None = None):
    """PER importance-sampling exponent after ``done_steps`` env steps: linear from
    ``per_beta0`` to ``per_beta_final`` over the run."""
    progress = jnp.minimum(done_steps / config.total_steps, 1.0)
    beta0, beta1 = hp(config, hyper, "per_beta0"), hp(config, hyper, "per_beta_final")
    return beta0 + (beta1 - beta0) * progress


def first_learning_iteration(config: Config) -> int:
    """Index of the first iteration that ends with a gradient update."""
    return max(-(-config.learning_starts // config.env_steps_per_iteration), 1) - 1


def num_updates(config: Config) -> int:
    """Gradient updates in the whole run (for learning-rate annealing)."""
    iterations = max(config.num_iterations - first_learning_iteration(config), 0)
    return iterations * config.updates_per_iteration


def learning_due(config: Config, done_steps):
    """Whether the iteration that ends after ``done_steps`` env steps learns."""
    return learns(config.variant) and done_steps >= config.learning_starts


def target_due(config: Config, done_steps, hyper: dict | None = None):
    """Whether the iteration that ends after ``done_steps`` env steps updates the target net:
    the env-step count crossed a multiple of ``target_period`` during it."""
    if not VARIANTS[config.variant].uses_target_net:
        return False
    period = hp(config, hyper, "target_period")
    return done_steps // period != (done_steps - config.env_steps_per_iteration) // period


def first_update_index(config: Config, done_steps):
    """Index (over the run) of the first gradient update of the iteration ending after
    ``done_steps`` env steps."""
    iteration = done_steps // config.env_steps_per_iteration - 1
    return (iteration - first_learning_iteration(config)) * config.updates_per_iteration


def bootstrap_discount(gamma, terminated: jax.Array) -> jax.Array:
    """``f32`` like ``terminated``: ``gamma * (1 - terminated)``. A termination stops the
    bootstrap; a time-limit truncation (``done`` but not ``terminated``) keeps it."""
    return gamma * (1.0 - terminated.astype(jnp.float32))


def maybe(predicate, fn: Callable, state):
    """``fn(state)`` if ``predicate`` else ``state``: a Python test for a Python bool, else a
    ``lax.cond`` (a real branch while ``predicate`` is unbatched)."""
    if isinstance(predicate, bool | np.bool_):
        return fn(state) if predicate else state
    return jax.lax.cond(predicate, fn, lambda s: s, state)


# ----------------------------------------------------------------------------- the agent


def default_replay(config: Config) -> Replay:
    """The variant's replay (uniform or prioritized) with the config's sizes."""
    if config.prioritized:
        from dqn_jax.per import prioritized_replay

        return prioritized_replay(
            config.buffer_size,
            config.batch_size,
            alpha=config.per_alpha,
            eps=config.per_eps,
            priority_on_insert=config.per_priority_on_insert,
        )
    return uniform_replay(config.buffer_size, config.batch_size)


def make_agent(
    config: Config,
    spec: EnvSpec,
    *,
    network: nn.Module | None = None,
    head: Head | None = None,
    target_fn: Callable | None = None,
    loss_fn: Callable | None = None,
    replay: Replay | None = None,
    returns: Returns | None = None,
    epsilon: Callable | None = None,
    obs_dtype=jnp.float32,
    flat_params: bool = False,
) -> Agent:
    """The agent of ``config`` on an environment with ``spec``; every argument after ``spec``
    replaces the config's choice (how experiment scripts compose their own agents):

    - ``network``: a flax module ``obs [B, *obs_shape] -> output [B, ...]`` (default: the
      config's MLP or Nature CNN).
    - ``head``: a :class:`~dqn_jax.heads.Head` (default: the variant's,
      :func:`dqn_jax.variants.make_head`; ``target_fn`` / ``loss_fn`` replace the pieces of a
      scalar head).
    - ``replay``: any :class:`~dqn_jax.replay.Replay` (default: the variant's).
    - ``returns``: a :class:`~dqn_jax.returns.Returns` (default: ``n_step(config.n_step)``,
      one-step where the replay builds n-step returns itself).
    - ``epsilon``: ``(env_step, hyper) -> f32[]`` (default: :func:`epsilon_at` of the config).

    ``obs_dtype``: the dtype observations are stored in (uint8 for frames). ``flat_params``
    keeps the parameters as one flat vector (fewer buffers per call: the host driver's choice);
    ``unravel`` gives the pytree back.
    """
    variant = VARIANTS[config.variant]
    trains = learns(config.variant)
    network = network or make_network(config, spec.num_actions, spec.obs_shape)
    if head is None and (target_fn or loss_fn):
        if variant.head != "scalar":
            raise ValueError(
                f"target_fn/loss_fn replace a scalar head's pieces; variant={config.variant!r} "
                f"has a {variant.head} head: pass head= instead"
            )
        loss_fn = loss_fn or losses.LOSSES[config.loss]
        head = scalar_head(target_fn or variant.target_fn, loss_fn)
    head = head or make_head(config)
    on_policy = variant.on_policy
    replay = replay or default_replay(config)
    if replay.n_step not in (1, config.n_step):
        raise ValueError(f"the replay builds {replay.n_step}-step returns; n_step={config.n_step}")
    returns = returns or n_step(config.n_step if replay.n_step == 1 else 1)
    epsilon = epsilon or (lambda step, hyper: epsilon_at(config, step, hyper))
    example_obs = jnp.zeros((1, *spec.obs_shape), obs_dtype)
    unravel = None
    apply_fn = with_key(network)
    if flat_params:
        shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0), example_obs)
        _, unravel = ravel_pytree(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes))
        tree_apply = apply_fn
        apply_fn = lambda flat, *args, **kw: tree_apply(unravel(flat), *args, **kw)  # noqa: E731
    stochastic = bool(config.noisy) or variant.head == "iqn"
    optimizer = make_optimizer(config.optimizer, config.max_grad_norm, config.adam_eps)
    update = make_update(apply_fn, optimizer, replay, head)
    total_updates = num_updates(config)
    if on_policy:
        rollout_update = pqn.make_rollout_update(
            lambda params, obs: q_values(params, obs),  # defined below
            losses.LOSSES[config.loss],
            optimizer,
            num_epochs=config.num_epochs,
            num_minibatches=config.num_minibatches,
            recompute=config.lambda_recompute,
            total_updates=total_updates,
            anneal=config.anneal_lr,
        )
    n, upi, vspi = config.num_envs, config.updates_per_iteration, config.vector_steps_per_iteration

    def fresh_returns():
        """The returns accumulator's state before any step (example: one vector step)."""
        if on_policy:
            return None
        example = example_transition(example_obs[0])
        return returns.init(jax.tree.map(lambda x: jnp.zeros((n, *x.shape), x.dtype), example))

    def init(key: jax.Array, hyper: dict | None = None) -> AgentState:
        k_net, k_run = jax.random.split(key)
        params = network.init(k_net, example_obs)
        if flat_params:
            params, _ = ravel_pytree(params)
        return AgentState(
            learner=Learner(params, params, optimizer.init(params)),
            replay=None if on_policy else replay.init(example_transition(example_obs[0])),
            returns=fresh_returns(),
            plan=jnp.zeros((vspi, n), jnp.int32),
            stats=jnp.zeros((4,), jnp.float32),
            key=k_run,
            hyper=hyper or {},
        )

    def q_values(params, obs: jax.Array, key=None) -> jax.Array:
        out = apply_fn(params, obs.astype(obs_dtype), key, **head.act_kwargs)
        return head.q_values(out)

    def greedy(params, obs: jax.Array, key=None) -> jax.Array:
        return jnp.argmax(q_values(params, obs, key), axis=-1).astype(jnp.int32)

    def act(state: AgentState, obs: jax.Array, j) -> jax.Array:
        """Actions ``i32[N]`` for ``obs [N, *obs_shape]`` at step ``j`` of the iteration."""
        if not trains:
            return state.plan[j]
        q = q_values(state.learner.params, obs, act_key(state.key, j))
        return act_from_plan(q, state.plan[j])

    def begin_iteration(state: AgentState, first_env_step) -> AgentState:
        """Draw the exploration plan of the iteration whose first env step is given."""
        key, k_plan = rng.split(state.key)
        uniforms = rng.uniform(k_plan, vspi * 2 * n).reshape(vspi, 2, n)
        eps = jax.vmap(lambda i: epsilon(first_env_step + i * n, state.hyper))(jnp.arange(vspi))
        plan = exploration_plan(uniforms, jnp.asarray(eps, jnp.float32), spec.num_actions)
        return state._replace(plan=plan, key=key)

    def to_transitions(steps: EnvSteps, hyper: dict) -> Transition:
        reward = jnp.sign(steps.reward) if config.clip_rewards else steps.reward
        if config.reward_scale != 1.0:
            reward = reward * config.reward_scale
        discount = bootstrap_discount(hp(config, hyper, "gamma"), steps.terminated)
        last = steps.done.astype(jnp.float32)
        return Transition(steps.obs, steps.action, reward, discount, steps.next_obs, last)

    def add(state: AgentState, transitions: Transition) -> Any:
        abs_td = None
        if replay.needs_priority:
            learner = state.learner
            key = jax.random.fold_in(state.key, PRIORITY_STREAM)
            terms = loss_terms(
                apply_fn, head, learner.params, learner.target_params, transitions, key
            )
            abs_td = terms.priority
        return replay.add(state.replay, transitions, abs_td)

    def store(state: AgentState, steps: EnvSteps, first_vector_step) -> AgentState:
        """Store an iteration's ``V x N`` steps (through ``returns``) in time then env order;
        ``first_vector_step``: index of its first vector step since storing began."""
        chex.assert_shape(steps.action, (steps.action.shape[0], n))
        transitions = to_transitions(steps, state.hyper)
        acc, out = jax.lax.scan(returns.push, state.returns, transitions, unroll=True)
        state = state._replace(returns=acc)
        if returns.delay == 0:
            flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), out)
            return state._replace(replay=add(state, flat))
        for v in range(out.action.shape[0]):
            step_out = jax.tree.map(lambda x, v=v: x[v], out)
            adding = lambda s, t=step_out: s._replace(replay=add(s, t))  # noqa: E731
            state = maybe(first_vector_step + v >= returns.delay, adding, state)
        return state

    def learn(state: AgentState, done_steps) -> AgentState:
        """``updates_per_iteration`` gradient updates (a scan); stats accumulate."""
        hyper = state.hyper
        beta, lr = beta_at(config, done_steps, hyper), hp(config, hyper, "lr")
        key, *update_keys = rng.split(state.key, upi + 1)
        first_index = first_update_index(config, done_steps)

        def one_update(carry, xs):
            learner, replay_state = carry
            k, index = xs
            lr_now = annealed_lr(lr, index, total_updates, config.anneal_lr)
            learner, replay_state, metrics = update(learner, replay_state, k, beta, lr_now)
            return (learner, replay_state), metrics

        (learner, replay_state), metrics = jax.lax.scan(
            one_update,
            (state.learner, state.replay),
            (jnp.stack(update_keys), first_index + jnp.arange(upi)),
        )
        stats = accumulate(state.stats, metrics)
        return state._replace(learner=learner, replay=replay_state, key=key, stats=stats)

    def learn_rollout(state: AgentState, steps: EnvSteps, done_steps) -> AgentState:
        """pqn: ``num_epochs x num_minibatches`` updates on the iteration's own transitions."""
        hyper = state.hyper
        key, k_update = rng.split(state.key)
        learner, metrics = rollout_update(
            state.learner,
            to_transitions(steps, hyper),
            k_update,
            hp(config, hyper, "q_lambda"),
            hp(config, hyper, "lr"),
            first_update_index(config, done_steps),
        )
        return state._replace(learner=learner, key=key, stats=accumulate(state.stats, metrics))

    def end_iteration(state: AgentState, steps: EnvSteps, done_steps, learn_now, copy_now):
        """Store the iteration's steps, then learn if ``learn_now``, then update the target
        (``tau`` blend) if ``copy_now``; ``done_steps``: env steps done after the iteration."""
        if not trains:
            return state
        if on_policy:
            return maybe(learn_now, lambda s: learn_rollout(s, steps, done_steps), state)
        state = store(state, steps, done_steps // n - vspi)
        state = maybe(learn_now, lambda s: learn(s, done_steps), state)
        tau = hp(config, state.hyper, "tau")
        blend = lambda s: s._replace(learner=update_target(s.learner, tau))  # noqa: E731
        return maybe(copy_now, blend, state)

    def restart_returns(state: AgentState) -> AgentState:
        return state._replace(returns=fresh_returns())

    return Agent(
        config,
        spec,
        apply_fn,
        init,
        q_values,
        greedy,
        act,
        begin_iteration,
        store,
        end_iteration,
        restart_returns,
        unravel,
        stochastic,
    )


def accumulate(stats: jax.Array, metrics) -> jax.Array:
    """Chunk statistics ``f32[4]`` plus one learning iteration's ``metrics`` (``loss`` and
    ``q_mean`` per update): loss sum, Q sum, iterations learned, non-finite losses."""
    bad = jnp.sum(~jnp.isfinite(metrics.loss)).astype(jnp.float32)
    return stats + jnp.stack([metrics.loss.mean(), metrics.q_mean.mean(), 1.0, bad])


def with_key(network: nn.Module) -> Callable:
    """``apply(params, obs, key=None, **kwargs)`` of ``network``; a module whose ``__call__``
    takes no ``key`` (a deterministic one written elsewhere) is called without it."""
    if "key" in inspect.signature(type(network).__call__).parameters:
        return network.apply
    return lambda params, obs, key=None, **kwargs: network.apply(params, obs, **kwargs)


def act_key(key: jax.Array, j) -> jax.Array:
    """The acting key of step ``j`` of an iteration whose state key is ``key`` (both drivers:
    a noisy net's noise and IQN's fractions are drawn afresh every step)."""
    return jax.random.fold_in(key, j)


def reset_stats(state: AgentState) -> AgentState:
    """``state`` with its chunk statistics zeroed (drivers call this as a chunk starts)."""
    return state._replace(stats=jnp.zeros_like(state.stats))


def split_run_key(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A run's key split for the agent, its environments and its probe states."""
    k_agent, k_env, k_probe = jax.random.split(key, 3)
    return k_agent, k_env, k_probe
