"""Gymnasium backend: the environment steps on the host, acting/storing/learning are jitted.

The agent is the JAX backend's (the same :func:`dqn_jax.agent.make_update`, replay, targets,
losses, epsilon schedule, optimizer, network and schedules); only the environment moves to the
host. Per vector step of the ``num_envs`` Gymnasium environments the host does::

    next_obs, reward, terminated, truncated, info = envs.step(actions)         # host
    stage[j] = (obs, actions, reward, stored_next_obs(...), terminated)       # host, numpy
    if the step ends a loop iteration:                                         # 1 dispatch
        state, (actions, plan) = end(state, pack(next_obs, env_step, *stage))  # store V*N
                                           # transitions, learn, target update, plan, act
    elif plan[j + 1] says every env explores:                                  # 0 dispatches
        actions = plan[j + 1]
    else:                                                                      # 1 dispatch
        actions = where(plan[j + 1] >= 0, plan[j + 1], greedy(params, next_obs))

so a vector step costs **at most 1 dispatch, 1 host->device transfer and 1 device->host
read** (each a single array; an iteration's end packs its arrays into one). ``summary.json``
reports the measured ``dispatches_per_vector_step`` and ``transfers_per_vector_step``, counted
where the programs are launched; ``tests/test_gym_backend.py`` checks the host->device count
with JAX's transfer guard. Measured on ``cleanrl-cartpole`` (1 env, an iteration = 10 steps):
0.74 dispatches per env step over the 500,000 (epsilon-greedy steps where the coin says explore
need none). The environments are a :class:`dqn_jax.vector_env.SameStepVectorEnv` (Gymnasium's
SyncVectorEnv semantics without its per-step overhead).

- The program kinds (:class:`StepKind`: plain act, or iteration end with or without learning
  and target update) are picked on the host by :func:`scheduler`, the schedule of
  :mod:`dqn_jax.loop`; the end programs donate the state, so the replay is written in place.
- An iteration's transitions are staged on the host and stored with its last step, before its
  learning: the replay holds exactly what step-by-step storing would give (nothing reads it in
  between), in the same order.
- An iteration's exploration coins and random actions are drawn on the device with the run's
  key when it starts (:func:`exploration_plan`); the device acts greedily where the plan does
  not explore (:func:`act_from_plan`).

Autoreset: the vector environment uses Gymnasium's ``AutoresetMode.SAME_STEP``: where an
episode ends, ``envs.step`` returns the *reset* observation and the episode's true final
observation in ``info["final_obs"]``. The stored transition's ``next_obs`` is that final
observation (also for a time-limit truncation, which stays non-terminal so the agent bootstraps
through it); the next action is chosen from the reset observation, and no transition ever
connects two episodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from dqn_jax import atari, losses, report, rng
from dqn_jax.agent import Learner, annealed_lr, make_optimizer, make_update, td_errors
from dqn_jax.agent import update_target as blend_target
from dqn_jax.config import Config, ConfigError
from dqn_jax.envs import EnvSpec, unknown_env_message
from dqn_jax.frame_replay import FrameTransition, frame_replay
from dqn_jax.loop import epsilon_at, make_replay, num_updates
from dqn_jax.networks import MLPQNetwork, NatureQNetwork
from dqn_jax.replay import Replay, Transition
from dqn_jax.variants import VARIANTS
from dqn_jax.vector_env import SameStepVectorEnv

EVAL_SEED_OFFSET = 0x5EED
"""Evaluation environments are seeded ``config.seed + EVAL_SEED_OFFSET + i`` (training envs use
``config.seed + i``), so evaluating never touches the training environments' streams."""

EVAL_MAX_STEPS = 108_000
"""Step cap of one greedy evaluation episode when the environment has no time limit."""


# --------------------------------------------------------------------------- environments


@cache
def is_atari(env_id: str) -> bool:
    """Whether ``env_id`` gets the Atari setup (:mod:`dqn_jax.atari` preprocessing, the frame
    replay): every ``ALE/...`` id, and any other id ale-py registers when it is installed.
    An id Gymnasium already knows is answered from its registry, without importing ale-py."""
    import gymnasium as gym

    if env_id.startswith("ALE/"):
        return True
    spec = gym.registry.get(env_id)
    if spec is not None:
        return spec.entry_point == atari.ALE_ENTRY_POINT
    try:
        return atari.is_atari_id(env_id)  # registers ale-py's ids, then looks
    except ImportError:
        return False


def make_env(env_id: str, *, terminal_on_life_loss: bool = False):
    """One Gymnasium environment: ``gym.make(env_id)``, or for an Atari id
    :func:`dqn_jax.atari.make_atari_env` (Nature DQN preprocessing, ``uint8[4, 84, 84]``
    observations, raw rewards)."""
    import gymnasium as gym

    if is_atari(env_id):
        return atari.make_atari_env(env_id, terminal_on_life_loss=terminal_on_life_loss)
    return gym.make(env_id)


@cache
def gymnasium_env_spec(env_id: str) -> EnvSpec:
    """Static facts of a Gymnasium id (``max_episode_steps`` 0 = no time limit).

    ``ValueError`` for an unknown id (naming close ids), an environment that cannot be built
    (e.g. a missing optional dependency), a non-Discrete action space or a non-Box observation
    space.
    """
    import gymnasium as gym
    from gymnasium import spaces

    if is_atari(env_id):
        try:
            atari.is_atari_id(env_id)  # registers ale-py's ids
        except ImportError as err:
            raise ValueError(str(err)) from None
    if env_id not in gym.registry:
        raise ValueError(unknown_env_message(env_id))
    try:
        env = make_env(env_id)
    except Exception as err:  # missing extras (box2d, ale-py ROMs, ...) surface as many types
        raise ValueError(f"env={env_id!r} could not be created: {err}") from None
    try:
        action_space, obs_space = env.action_space, env.observation_space
        limit = env.spec.max_episode_steps if env.spec is not None else None
    finally:
        env.close()
    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(
            f"env={env_id!r} has a {type(action_space).__name__} action space; "
            "DQN needs a discrete one (gymnasium.spaces.Discrete)."
        )
    if not isinstance(obs_space, spaces.Box):
        raise ValueError(
            f"env={env_id!r} has a {type(obs_space).__name__} observation space; "
            "the gymnasium backend needs a Box (array) observation space."
        )
    return EnvSpec(env_id, tuple(int(d) for d in obs_space.shape), int(action_space.n), limit or 0)


def env_kwargs(config: Config) -> dict:
    """Keyword arguments of :func:`make_env` that come from ``config``."""
    return {"terminal_on_life_loss": True} if config.terminal_on_life_loss else {}


def obs_dtype(env_id: str) -> np.dtype:
    """dtype the replay stores observations in: ``uint8`` for image (uint8) observations, else
    ``float32``."""
    env = make_env(env_id)
    try:
        dtype = np.dtype(env.observation_space.dtype)
    finally:
        env.close()
    return np.dtype(np.uint8) if dtype == np.uint8 else np.dtype(np.float32)


def make_vector_env(env_id: str, num_envs: int, **env_kwargs):
    """``num_envs`` copies of ``env_id`` with same-step autoreset (the final observation of an
    ended episode is in ``info["final_obs"]``): a :class:`dqn_jax.vector_env.SameStepVectorEnv`,
    which returns what ``gymnasium.vector.SyncVectorEnv`` with ``AutoresetMode.SAME_STEP`` does,
    at about half its cost per step on CartPole."""
    return SameStepVectorEnv([lambda: make_env(env_id, **env_kwargs) for _ in range(num_envs)])


def stored_next_obs(next_obs: np.ndarray, done: np.ndarray, info: dict) -> np.ndarray:
    """The ``next_obs`` to store for one vector step: the observation returned by ``step``,
    except where an episode ended (``done[i]``), where it is the episode's true final observation
    ``info["final_obs"][i]`` (same-step autoreset put the reset observation in ``next_obs``).

    ``next_obs``: ``[N, *obs_shape]``; ``done``: ``bool[N]``. Returns a new array when any
    episode ended, else ``next_obs`` itself.
    """
    if not done.any():
        return next_obs
    out = next_obs.copy()
    final = info["final_obs"]
    for i in np.flatnonzero(done):
        out[i] = final[i]
    return out


# --------------------------------------------------------------------------- one transfer

Layout = tuple[tuple[tuple[int, ...], np.dtype], ...]
"""Static ``(shape, dtype)`` of each array packed into one transfer."""


def pack(*arrays: np.ndarray) -> np.ndarray:
    """``arrays`` as one flat ``uint8`` vector (their bytes, C order, one after the other): one
    host->device transfer instead of one per array. Inverse: :func:`unpack`."""
    return np.concatenate([np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in arrays])


def unpack(raw: jax.Array, layout: Layout) -> list[jax.Array]:
    """The arrays of :func:`pack`, on the device, from ``raw uint8[bytes]`` and their static
    ``layout`` (bit-exact: bytes are reinterpreted, never converted)."""
    sizes = [int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize for shape, dt in layout]
    chex.assert_shape(raw, (sum(sizes),))
    out, offset = [], 0
    for (shape, dtype), size in zip(layout, sizes, strict=True):
        segment = raw[offset : offset + size]
        item = np.dtype(dtype).itemsize
        if item > 1:
            segment = jax.lax.bitcast_convert_type(segment.reshape(-1, item), dtype)
        out.append(segment.reshape(shape))
        offset += size
    return out


class Staging(NamedTuple):
    """Host-side transitions of the current loop iteration, ``[vector_steps_per_iteration, N,
    ...]`` each; sent to the device with the iteration's last step (see :func:`make_host_agent`)."""

    obs: np.ndarray
    action: np.ndarray  # int32
    reward: np.ndarray  # float32
    next_obs: np.ndarray
    terminated: np.ndarray  # float32, 1.0 = terminal
    done: np.ndarray  # float32, 1.0 = the episode ended (terminated or truncated)

    @staticmethod
    def allocate(config: Config, spec: EnvSpec, dtype: np.dtype) -> Staging:
        """Zeroed staging arrays for one iteration of ``config``."""
        lead = (config.vector_steps_per_iteration, config.num_envs)
        obs = np.zeros((*lead, *spec.obs_shape), dtype)
        scalars = np.zeros(lead, np.float32)
        action = np.zeros(lead, np.int32)
        return Staging(obs, action, scalars, obs.copy(), scalars.copy(), scalars.copy())


# --------------------------------------------------------------------------- device programs


class HostTrainState(NamedTuple):
    """The device-side state of a host-loop run (one seed).

    ``learner`` holds the parameters as flat ``f32[P]`` vectors (see :func:`make_host_agent`):
    fewer buffers per dispatch, which is most of a small program's cost on a CPU.
    """

    learner: Learner
    replay: Any
    plan: jax.Array  # i32[vector_steps_per_iteration, N]: this iteration's exploration plan
    counts: jax.Array  # i32[1]: gradient updates done
    metrics: jax.Array  # f32[3]: last loss, last mean Q(s, a), non-finite losses so far
    key: jax.Array


class StepKind(NamedTuple):
    """What the program after one vector step does (static, from :func:`scheduler`). A plain
    step only acts (and only if some env acts greedily); at the ``end`` of a loop iteration the
    program also stores the iteration's transitions, may ``learn`` and ``copy_target``, and
    draws the next iteration's exploration plan."""

    end: bool
    learn: bool
    copy_target: bool


class HostAgent(NamedTuple):
    """Pure, jittable functions of one host-loop agent (see :func:`make_host_agent`)."""

    config: Config
    spec: EnvSpec
    obs_dtype: np.dtype
    init: Callable[[jax.Array, jax.Array], tuple[HostTrainState, jax.Array]]
    end: Callable[[HostTrainState, jax.Array, StepKind], tuple[HostTrainState, jax.Array]]
    # init/end return ``i32[1 + V, N]``: the next actions, then the new iteration's plan
    greedy: Callable[[jax.Array, jax.Array], jax.Array]
    unravel: Callable[[jax.Array], Any]
    end_layout: Layout


def make_network(config: Config, spec: EnvSpec):
    """The Q-network for ``spec``: the config's MLP, or the Nature CNN."""
    if config.network == "nature_cnn":
        return NatureQNetwork(spec.num_actions)
    return MLPQNetwork(spec.num_actions, config.hidden_sizes, config.init_scheme)


def make_host_replay(config: Config) -> Replay:
    """The replay of a host-loop run: for Atari ids, :func:`dqn_jax.frame_replay.frame_replay`
    (one stored frame per transition, uniform or prioritized as the variant says); otherwise
    the variant's own (:func:`dqn_jax.loop.make_replay`)."""
    if not is_atari(config.env):
        return make_replay(config)
    return frame_replay(
        config.buffer_size,
        config.batch_size,
        config.num_envs,
        prioritized=VARIANTS[config.variant].replay == "prioritized",
        alpha=config.per_alpha,
        eps=config.per_eps,
        priority_on_insert=config.per_priority_on_insert,
    )


def exploration_plan(uniforms: jax.Array, epsilon: jax.Array, num_actions: int) -> jax.Array:
    """Which env explores at which step of an iteration, decided ahead: ``i32[V, N]`` holding
    the random action where ``uniforms[v, 0, e] < epsilon[v]`` and -1 (act greedily) elsewhere.

    ``uniforms f32[V, 2, N]`` in [0, 1) (a coin and an action draw per step and env),
    ``epsilon f32[V]`` (each step's epsilon). With :func:`act_from_plan` this is the law of
    :func:`dqn_jax.exploration.epsilon_greedy`; drawing an iteration's coins at once means a
    step whose envs all explore needs no device call at all (the host reads the plan).
    """
    chex.assert_rank(uniforms, 3)
    chex.assert_shape(epsilon, (uniforms.shape[0],))
    random_actions = jnp.minimum(jnp.floor(uniforms[:, 1] * num_actions), num_actions - 1)
    explore = uniforms[:, 0] < epsilon[:, None]
    return jnp.where(explore, random_actions.astype(jnp.int32), -1)


def act_from_plan(q: jax.Array, plan_row: jax.Array) -> jax.Array:
    """Actions ``i32[N]``: the planned random action where ``plan_row i32[N] >= 0``, else the
    argmax of ``q f32[N, A]``."""
    chex.assert_rank(q, 2)
    chex.assert_shape(plan_row, q.shape[:1])
    return jnp.where(plan_row >= 0, plan_row, jnp.argmax(q, axis=-1).astype(jnp.int32))


def make_host_agent(
    config: Config,
    *,
    target_fn: Callable | None = None,
    loss_fn: Callable | None = None,
    replay: Replay | None = None,
    spec: EnvSpec | None = None,
    dtype: np.dtype | None = None,
) -> HostAgent:
    """The device side of a host-loop run of ``config`` (one seed); ``N = num_envs``,
    ``V = vector_steps_per_iteration``. Every function is pure and jittable.

    - ``init(key, obs) -> (state, out i32[1 + V, N])``: network, optimizer, replay and the
      first iteration's exploration plan from ``key`` (split for every use); ``out`` = the first
      actions for ``obs [N, *obs_shape]``, then the plan (:func:`exploration_plan`, epsilon
      ``epsilon_at(config, env_step)`` baked in).
    - ``greedy(flat_params, obs) -> actions i32[N]``: argmax of Q. A plain step's whole
      program: the host takes the plan's action where it explores (``plan >= 0``) and this one
      elsewhere (the law of :func:`act_from_plan`), and skips the call when every env explores.
      Also used by evaluation.
    - ``end(state, packed, kind) -> (state, out)``: the last step of an iteration.
      ``packed`` = ``pack(obs, env_step i32[1], *Staging)`` (:data:`end_layout`): store the
      iteration's
      ``V * N`` transitions in time then env order (as :mod:`dqn_jax.loop` does), then, as
      ``kind`` says, ``updates_per_iteration`` gradient updates and the target update, then
      draw the next iteration's plan and act; ``out`` as for ``init``.

    Transitions are stored at the iteration's end, before its learning, exactly as if stored
    step by step: nothing reads the replay in between (no learning inside an iteration; a
    prioritized replay's ``td`` priority on insert uses the same, unchanged parameters).
    The parameters live as one flat vector (``unravel`` gives the network's pytree back). The
    update, replay, targets, losses and optimizer are :mod:`dqn_jax.agent`'s and
    :mod:`dqn_jax.loop`'s; ``target_fn``/``loss_fn``/``replay`` override the variant's, as in
    :func:`dqn_jax.loop.make_train`.
    """
    variant = VARIANTS[config.variant]
    learns = variant.target_fn is not None
    target_fn = target_fn or variant.target_fn
    loss_fn = loss_fn or losses.LOSSES[config.loss]
    replay = replay or make_host_replay(config)
    frames = is_atari(config.env)
    spec = spec or gymnasium_env_spec(config.env)
    dtype = np.dtype(dtype or obs_dtype(config.env))
    network = make_network(config, spec)
    example_obs = jnp.zeros((1, *spec.obs_shape), dtype)
    shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0), example_obs)
    _, unravel = ravel_pytree(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes))

    def apply_flat(flat_params, obs):
        return network.apply(unravel(flat_params), obs)

    optimizer = make_optimizer(config.optimizer, config.max_grad_norm)
    update = make_update(apply_flat, optimizer, replay, target_fn, loss_fn)
    total_updates = num_updates(config)
    uses_td_on_insert = variant.replay == "prioritized" and config.per_priority_on_insert == "td"
    n, upi, vspi = config.num_envs, config.updates_per_iteration, config.vector_steps_per_iteration
    f32, i32 = np.dtype(np.float32), np.dtype(np.int32)
    many = vspi * n
    end_layout: Layout = (
        ((n, *spec.obs_shape), dtype),
        ((1,), i32),
        ((many, *spec.obs_shape), dtype),
        ((many,), i32),
        ((many,), f32),
        ((many, *spec.obs_shape), dtype),
        ((many,), f32),
        ((many,), f32),
    )

    def act_on(flat_params, plan, obs, env_step) -> jax.Array:
        return act_from_plan(apply_flat(flat_params, obs), plan[(env_step // n) % vspi])

    def iteration_randomness(key: jax.Array):
        """``(next key, update keys u32[upi, 2], plan uniforms f32[V, 2, N])``: a split and a
        draw, with :mod:`dqn_jax.rng` (jax.random's numbers; on a CPU jax's own threefry is
        a small XLA loop per call, which cost more than the rest of a store-only iteration)."""
        keys = rng.split(key, 2 + upi)
        return keys[0], keys[2:], rng.uniform(keys[1], vspi * 2 * n).reshape(vspi, 2, n)

    def draw_plan(state: HostTrainState, uniforms, first_env_step) -> HostTrainState:
        """The exploration plan of the iteration whose first env step is ``first_env_step``."""
        epsilon = jax.vmap(lambda i: epsilon_at(config, first_env_step + i * n))(jnp.arange(vspi))
        return state._replace(plan=exploration_plan(uniforms, epsilon, spec.num_actions))

    def with_plan(state: HostTrainState, actions: jax.Array) -> jax.Array:
        return jnp.concatenate([actions[None], state.plan])

    def init(key: jax.Array, obs: jax.Array) -> tuple[HostTrainState, jax.Array]:
        k_net, k_run = jax.random.split(key)
        flat, _ = ravel_pytree(network.init(k_net, example_obs))
        learner = Learner(flat, flat, optimizer.init(flat))
        example = Transition(
            example_obs[0], jnp.int32(0), jnp.float32(0), example_obs[0], jnp.float32(0)
        )
        state = HostTrainState(
            learner,
            replay.init(example),
            jnp.zeros((vspi, n), jnp.int32),
            jnp.zeros((1,), jnp.int32),
            jnp.zeros((3,), jnp.float32),
            k_run,
        )
        key, _, uniforms = iteration_randomness(state.key)
        state = draw_plan(state._replace(key=key), uniforms, 0)
        return state, with_plan(state, act_on(state.learner.params, state.plan, obs, 0))

    def store(state: HostTrainState, transitions: Transition) -> Any:
        abs_td = None
        if uses_td_on_insert:
            learner = state.learner
            td, _ = td_errors(
                learner.params, learner.target_params, transitions, apply_flat, target_fn,
                config.gamma,
            )  # fmt: skip
            abs_td = jnp.abs(td)
        return replay.add(state.replay, transitions, abs_td)

    def learn(state: HostTrainState, update_keys, env_steps) -> HostTrainState:
        progress = jnp.minimum(env_steps / config.total_steps, 1.0)
        beta = config.per_beta0 + (config.per_beta_final - config.per_beta0) * progress

        def one_update(carry, xs):
            learner, replay_state = carry
            k, index = xs
            lr = annealed_lr(config.lr, index, total_updates, config.anneal_lr)
            learner, replay_state, m = update(learner, replay_state, k, beta, config.gamma, lr)
            return (learner, replay_state), m

        (learner, replay_state), m = jax.lax.scan(
            one_update,
            (state.learner, state.replay),
            (update_keys, state.counts[0] + jnp.arange(upi)),
        )
        bad = state.metrics[2] + jnp.sum(~jnp.isfinite(m.loss)).astype(jnp.float32)
        return state._replace(
            learner=learner,
            replay=replay_state,
            counts=state.counts + upi,
            metrics=jnp.stack([jnp.mean(m.loss), jnp.mean(m.q_mean), bad]),
        )

    def end(state: HostTrainState, packed: jax.Array, kind: StepKind):
        obs, env_step, *staged = unpack(packed, end_layout)
        transitions = FrameTransition(*staged) if frames else Transition(*staged[:-1])
        if config.clip_rewards:
            transitions = transitions._replace(reward=atari.clip_reward(transitions.reward))
        chex.assert_shape(transitions.reward, (many,))
        key, update_keys, uniforms = iteration_randomness(state.key)
        state = state._replace(key=key)
        if learns:
            state = state._replace(replay=store(state, transitions))
        if learns and kind.learn:
            state = learn(state, update_keys, env_step[0])
        if learns and kind.copy_target:
            state = state._replace(learner=blend_target(state.learner, config.tau))
        state = draw_plan(state, uniforms, env_step[0])
        return state, with_plan(state, act_on(state.learner.params, state.plan, obs, env_step[0]))

    def greedy(flat_params: jax.Array, obs: jax.Array) -> jax.Array:
        return jnp.argmax(apply_flat(flat_params, obs.astype(dtype)), axis=-1).astype(jnp.int32)

    return HostAgent(config, spec, dtype, init, end, greedy, unravel, end_layout)


PLAIN = StepKind(False, False, False)
"""A step inside an iteration: act only."""


def scheduler(config: Config) -> Callable[[int], StepKind]:
    """``kind_after(vector_step)``: what the program after vector step ``vector_step``
    (0-based) does, with the JAX loop's schedule (:mod:`dqn_jax.loop`). An iteration ends every
    ``vector_steps_per_iteration`` vector steps; at its end the agent learns once
    ``learning_starts`` env steps are done, and updates the target when the env-step count
    crossed a multiple of ``target_period``. (Constants hoisted: it runs once per env step.)"""
    variant = VARIANTS[config.variant]
    learns, uses_target = variant.target_fn is not None, variant.uses_target_net
    vspi, n = config.vector_steps_per_iteration, config.num_envs
    per_iter, starts, period = (
        config.env_steps_per_iteration,
        config.learning_starts,
        config.target_period,
    )
    plain = StepKind(False, False, False)

    def kind_after(vector_step: int) -> StepKind:
        if (vector_step + 1) % vspi:
            return plain
        done = (vector_step + 1) * n
        crossed = done // period != (done - per_iter) // period
        return StepKind(True, learns and done >= starts, uses_target and crossed)

    return kind_after


def schedule(config: Config, vector_step: int) -> StepKind:
    """:func:`scheduler`'s answer for one vector step."""
    return scheduler(config)(vector_step)


@cache
def compiled(agent: HostAgent, kind: StepKind) -> Callable:
    """The jitted program for ``kind``: ``greedy`` (plain step) or ``end`` with the state
    donated (the replay is written in place). Cached per agent: runs sharing an agent compile
    once."""
    if not kind.end:
        return jax.jit(agent.greedy)
    return jax.jit(lambda state, packed: agent.end(state, packed, kind), donate_argnums=0)


class Programs:
    """Launches a run's programs and counts dispatches and transfers (see :meth:`step`)."""

    def __init__(self, agent: HostAgent):
        self.agent = agent
        self.programs: dict[StepKind, Callable] = {}
        self.greedy = compiled(agent, PLAIN)
        self.dispatches = 0
        self.transfers = 0

    def step(self, state: HostTrainState, host_input: np.ndarray, kind: StepKind):
        """Run the program after one vector step: ``(state, out)`` with ``out`` numpy
        (greedy actions ``i32[N]`` for a plain step, whose ``host_input`` is the observation
        ``[N, *obs_shape]``; at an iteration's end, actions and plan ``i32[1 + V, N]``, and
        ``host_input`` is the packed iteration). One dispatch, one host->device transfer
        (``host_input``, handed straight to the program: JAX's C++ path moves it ~10x faster
        than ``jax.device_put``), one device->host read."""
        if not kind.end:
            return state, self.act(state.learner.params, host_input)
        program = self.programs.get(kind) or self.programs.setdefault(
            kind, compiled(self.agent, kind)
        )
        state, out = program(state, host_input)
        self.dispatches += 1
        self.transfers += 2
        return state, np.asarray(out)

    def act(self, flat_params: jax.Array, obs: np.ndarray) -> np.ndarray:
        """A plain step's program: greedy actions ``i32[N]`` for ``obs [N, *obs_shape]`` (the
        hot path: one dispatch, one transfer each way, nothing else)."""
        self.dispatches += 1
        self.transfers += 2
        return np.asarray(self.greedy(flat_params, obs))

    def warm_up(self, state: HostTrainState, kinds: set[StepKind]) -> float:
        """Compile the programs of ``kinds`` by running them on a scratch copy of ``state``
        and zero inputs; seconds taken."""
        start = time.perf_counter()
        copy = jax.jit(lambda s: jax.tree.map(jnp.copy, s))
        for kind in sorted(kinds):
            if kind.end:
                zeros = pack(*(np.zeros(shape, dt) for shape, dt in self.agent.end_layout))
            else:
                zeros = np.zeros(self.agent.end_layout[0][0], self.agent.obs_dtype)
            jax.block_until_ready(self.step(copy(state), zeros, kind))
        self.dispatches = self.transfers = 0
        return time.perf_counter() - start


def evaluate(agent: HostAgent, flat_params: jax.Array, episodes: int, seed: int) -> np.ndarray:
    """Greedy returns ``f32[episodes]``: one episode in each of ``episodes`` fresh environments
    (seeded ``seed + i``), run to its end (or :data:`EVAL_MAX_STEPS` without a time limit)."""
    greedy = jax.jit(agent.greedy)
    envs = make_vector_env(agent.config.env, episodes, **env_kwargs(agent.config))
    try:
        obs, _ = envs.reset(seed=seed)
        total = np.zeros(episodes, np.float64)
        alive = np.ones(episodes, bool)
        for _ in range(agent.spec.max_episode_steps or EVAL_MAX_STEPS):
            actions = np.asarray(greedy(flat_params, obs))
            obs, reward, terminated, truncated, _ = envs.step(actions)
            total += np.where(alive, reward, 0.0)
            alive &= ~(terminated | truncated)
            if not alive.any():
                break
    finally:
        envs.close()
    return total.astype(np.float32)


def check_config(config: Config) -> None:
    """Raise :class:`ConfigError` for settings this backend does not support."""
    if config.num_seeds != 1:
        raise ConfigError(
            f"num_seeds={config.num_seeds} is invalid: must be 1 with backend='gymnasium' "
            "(one host environment loop per run; run several processes for several seeds)"
        )
    if config.env_steps_per_iteration > config.buffer_size:
        raise ConfigError(
            f"train_every={config.train_every} is invalid: must be <= buffer_size "
            f"({config.buffer_size}) with backend='gymnasium' (an iteration is stored at once)"
        )
    if config.prefill_episodes:
        raise ConfigError(
            f"prefill_episodes={config.prefill_episodes} is invalid: must be 0 with "
            "backend='gymnasium' (use learning_starts)"
        )


def kinds_in_run(config: Config) -> set[StepKind]:
    """The step kinds :func:`scheduler` gives in this run (what must be compiled)."""
    vspi = config.vector_steps_per_iteration
    seen = {schedule(config, 0)}
    for it in range(config.num_iterations):
        seen.add(schedule(config, (it + 1) * vspi - 1))
        if len(seen) == 5:  # every kind that exists
            break
    return seen


def train(
    config: Config,
    run_dir: str | Path | None = None,
    *,
    agent: HostAgent | None = None,
    progress: bool = True,
    echo: Callable[[str], Any] = print,
    devices: list | None = None,
):
    """Run ``config`` (one seed) on Gymnasium environments; write the run directory if
    ``run_dir`` is given. Same contract and files as :func:`dqn_jax.run.train`
    (``config.json``, ``episodes.csv``, ``metrics.jsonl``, ``evals.csv``, ``summary.json``,
    ``episodes.png``; no checkpoints: a host environment's state cannot be saved).

    Returns a :class:`dqn_jax.run.RunResult`: ``state`` is the final :class:`HostTrainState`
    with a leading seed axis of 1 and the parameters unflattened (``state.learner.params`` and
    ``target_params`` are the network's pytrees; the optimizer state stays flat);
    ``eval_returns`` is ``f32[1, eval_episodes]``. ``devices``: the first one runs the
    programs (default: JAX's default device). ``agent`` overrides :func:`make_host_agent`.

    Per vector step: 1 dispatch, 1 host->device and 1 device->host transfer (measured and
    written to ``summary.json``; plus one metrics read per chunk). Raises
    :class:`dqn_jax.run.NonFiniteError` at the first chunk boundary where the loss or the
    parameters are NaN/inf; :class:`ConfigError` for ``num_seeds != 1`` or a prefill.
    """
    check_config(config)
    device = (devices or jax.devices())[0]
    out = Path(run_dir) if run_dir is not None else None
    if out is not None:
        report.check_writable(out)
        report.write_json(out / "config.json", config.to_dict())
        (out / "metrics.jsonl").write_text("")
    with jax.default_device(device):
        agent = agent or make_host_agent(config)
        envs = make_vector_env(config.env, config.num_envs, **env_kwargs(config))
        try:
            return _run(config, agent, envs, out, progress, echo, device)
        finally:
            envs.close()


def _run(config: Config, agent: HostAgent, envs, out: Path | None, progress, echo, device):
    from dqn_jax.run import (
        NonFiniteError,
        RunResult,
        chunk_metrics,
        chunk_sizes,
        final_line,
        log_metrics,
        progress_bar,
        write_evals,
    )

    n, vspi = config.num_envs, config.vector_steps_per_iteration
    programs = Programs(agent)
    start = time.perf_counter()
    obs, _ = envs.reset(seed=config.seed)
    init = jax.jit(agent.init)
    state, first = init(jax.random.PRNGKey(config.seed), obs)
    actions, plan = np.asarray(first[0]), np.asarray(first[1:])
    explores = (plan >= 0).all(axis=1).tolist()  # per step of the iteration: no greedy env
    compile_s = time.perf_counter() - start + programs.warm_up(state, kinds_in_run(config))
    echo(
        f"{config.env} (gymnasium, {n} env(s)) | {config.variant} | 1 seed x "
        f"{config.total_steps:,} env steps | {device} | compiled in {compile_s:.1f}s"
    )

    run_start = time.perf_counter()
    log = report.EpisodeLog(out / "episodes.csv" if out else None, 1)
    evals: list[tuple[int, np.ndarray]] = []
    eval_seed = config.seed + EVAL_SEED_OFFSET
    bar = progress_bar(config.total_steps, progress)
    running = (np.zeros(n), np.zeros(n, np.int64))  # return and length of running episodes
    sizes = [k * vspi for k in chunk_sizes(config.num_iterations, config.num_chunks)]
    kind_after = scheduler(config)
    stage = Staging.allocate(config, agent.spec, agent.obs_dtype)
    vstep = 0
    for chunk, size in enumerate(sizes, start=1):
        chunk_start, first_vstep = time.perf_counter(), vstep
        rewards, dones = np.zeros((size, n)), np.zeros((size, n), bool)
        for t in range(size):  # a chunk is whole iterations: j = t % vspi
            j = t % vspi
            next_obs, reward, terminated, truncated, info = envs.step(actions)
            done = terminated | truncated
            stage.obs[j], stage.action[j], stage.reward[j] = obs, actions, reward
            stage.next_obs[j] = stored_next_obs(next_obs, done, info) if info else next_obs
            stage.terminated[j], stage.done[j] = terminated, done
            obs = next_obs
            if j == vspi - 1:  # the iteration's end: 1 dispatch
                vstep += vspi
                rewards[t + 1 - vspi : t + 1], dones[t + 1 - vspi : t + 1] = (
                    stage.reward,
                    stage.done,
                )
                packed = pack(obs, np.array([vstep * n], np.int32), *stage)
                state, decided = programs.step(state, packed, kind_after(vstep - 1))
                actions, plan = decided[0], decided[1:]
                explores = (plan >= 0).all(axis=1).tolist()
            elif explores[j + 1]:  # every env explores: no device call
                actions = plan[j + 1]
            else:
                greedy = programs.act(state.learner.params, obs)
                # With one env, "not every env explores" means it acts greedily.
                actions = greedy if n == 1 else np.where(plan[j + 1] >= 0, plan[j + 1], greedy)
        lengths, returns, running = episode_stats(rewards, dones, *running)
        env_step = vstep * n
        loss, q_mean, bad = jax.device_get(state.metrics)
        if bad or not params_finite(state.learner.params):
            raise NonFiniteError(
                f"non-finite loss or parameters at chunk {chunk} (env steps "
                f"{first_vstep * n:,}-{env_step:,}) in seed(s) {config.seed} (run index [0])"
            )
        window = report.extract_episodes(lengths[None], returns[None], first_vstep, n)
        log.append(window)
        periodic = config.eval_every_chunks and chunk % config.eval_every_chunks == 0
        if config.eval_episodes and periodic and chunk != len(sizes):
            ev = evaluate(agent, state.learner.params, config.eval_episodes, eval_seed)
            evals.append((env_step, ev[None]))
        line = report.window_line(
            chunk, len(sizes), env_step, window, log, float(loss), time.perf_counter() - chunk_start
        )
        evaluation = evals[-1][1] if evals and evals[-1][0] == env_step else None
        if evaluation is not None:
            line += f" | eval {evaluation.mean():.1f}"
        last = LastUpdate(np.array([[loss]]), np.array([[q_mean]]))
        seconds = time.perf_counter() - chunk_start
        log_metrics(out, None, chunk_metrics(chunk, env_step, last, window, evaluation, seconds))
        bar.update(size * n)
        bar.write(line) if progress else echo(line)
    bar.close()
    final_eval = np.zeros((0, 0), np.float32)
    if config.eval_episodes:
        ev = evaluate(agent, state.learner.params, config.eval_episodes, eval_seed)
        final_eval = ev[None]
    evals.append((vstep * n, final_eval))
    jax.block_until_ready(state)
    run_s = time.perf_counter() - run_start

    episodes = [log.seed_array(0)]
    summary = summarize(config, compile_s, run_s, episodes, final_eval, device, programs, vstep)
    summary["replay_bytes_per_transition"] = round(
        sum(x.nbytes for x in jax.tree.leaves(state.replay)) / config.buffer_size, 1
    )
    if out is not None:
        write_evals(out / "evals.csv", evals, config)
        report.write_json(out / "summary.json", summary)
        from dqn_jax.plots import plot_episodes

        plot_episodes(
            episodes, out / "episodes.png", f"{config.env} - {config.variant} (gymnasium)"
        )
    echo(final_line(summary))
    return RunResult(result_state(agent, state), episodes, final_eval, summary)


class LastUpdate(NamedTuple):
    """Loss and mean Q of a chunk's last update, ``[seeds=1, 1]``, in the shape
    :func:`dqn_jax.run.chunk_metrics` reads (``metrics.jsonl``)."""

    loss: np.ndarray
    q_mean: np.ndarray


def episode_stats(
    rewards: np.ndarray, dones: np.ndarray, ep_return: np.ndarray, ep_length: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Finished episodes of a stretch of vector steps, computed after the fact (the step loop
    only records ``rewards f32[T, N]`` and ``dones bool[T, N]``).

    ``ep_return f64[N]``/``ep_length i64[N]``: return and length of the episodes running when
    the stretch starts. Returns ``(lengths i64[T, N], returns f64[T, N], (ep_return,
    ep_length))``: the length and return of the episode that ended at ``[t, e]`` (0 elsewhere),
    and the running episodes' return and length at the end of the stretch.
    """
    steps, n = dones.shape
    lengths, returns = np.zeros((steps, n), np.int64), np.zeros((steps, n))
    ep_return, ep_length = ep_return.copy(), ep_length.copy()
    for e in range(n):
        ends = np.flatnonzero(dones[:, e])
        cum = ep_return[e] + np.cumsum(rewards[:, e])
        if len(ends) == 0:
            ep_return[e], ep_length[e] = cum[-1] if steps else ep_return[e], ep_length[e] + steps
            continue
        starts = np.concatenate([[-1], ends[:-1]])
        lengths[ends, e] = ends - starts + np.where(starts < 0, ep_length[e], 0)
        returns[ends, e] = cum[ends] - np.concatenate([[0.0], cum[ends[:-1]]])
        ep_return[e], ep_length[e] = cum[-1] - cum[ends[-1]], steps - 1 - ends[-1]
    return lengths, returns, (ep_return, ep_length)


def params_finite(flat_params: jax.Array) -> bool:
    """Whether every parameter is finite (one small dispatch and read)."""
    return bool(jax.device_get(jnp.all(jnp.isfinite(flat_params))))


def result_state(agent: HostAgent, state: HostTrainState) -> HostTrainState:
    """``state`` with unflattened network parameters and a leading seed axis of 1, the shape
    :func:`dqn_jax.run.train` returns."""
    learner = state.learner._replace(
        params=agent.unravel(state.learner.params),
        target_params=agent.unravel(state.learner.target_params),
    )
    return jax.tree.map(lambda x: x[None], state._replace(learner=learner))


def summarize(config, compile_s, run_s, episodes, final_eval, device, programs, vsteps) -> dict:
    """``summary.json`` of a host-loop run: :func:`dqn_jax.run.train`'s keys plus the backend,
    dispatches and transfers per vector step (``train`` adds the replay's bytes per transition:
    every replay array, sum tree included, over ``buffer_size``)."""
    last100 = [float(e[-100:, 2].mean()) if len(e) else None for e in episodes]
    eval_means = [float(x) for x in final_eval.mean(axis=1)] if final_eval.size else []
    return {
        "env": config.env,
        "variant": config.variant,
        "num_seeds": 1,
        "seeds": [config.seed],
        "total_env_steps": config.total_steps,
        "env_steps_per_seed": config.total_steps,
        "compile_s": round(compile_s, 3),
        "run_s": round(run_s, 3),
        "env_steps_per_s": round(config.total_steps / run_s, 1),
        "episodes_per_seed": [len(e) for e in episodes],
        "last100_return_per_seed": last100,
        "eval_episodes": config.eval_episodes,
        "final_eval_return_per_seed": eval_means,
        "final_eval_return_mean": float(np.mean(eval_means)) if eval_means else None,
        "devices": [str(device)],
        "jax_version": jax.__version__,
        "backend": "gymnasium",
        "num_envs": config.num_envs,
        "dispatches_per_vector_step": programs.dispatches / max(vsteps, 1),
        "transfers_per_vector_step": programs.transfers / max(vsteps, 1),
    }
