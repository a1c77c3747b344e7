"""The host driver: Gymnasium environments step in Python, the agent core runs jitted.

The agent is :mod:`dqn_jax.agent`'s, the same functions the JAX driver scans; only the
environments move to the host. Per vector step of the ``num_envs`` Gymnasium environments::

    next_obs, reward, terminated, truncated, info = envs.step(actions)         # host
    stage[j] = (obs, actions, reward, stored_next_obs(...), terminated, done)  # host, numpy
    if the step ends a loop iteration:                                         # 1 dispatch
        state, (actions, plan) = end(state, pack(next_obs, env_step, *stage))
            # agent.end_iteration (store V*N, learn, target), agent.begin_iteration, agent.act
    elif plan[j + 1] says every env explores:                                  # 0 dispatches
        actions = plan[j + 1]
    else:                                                                      # 1 dispatch
        actions = where(plan[j + 1] >= 0, plan[j + 1], agent.greedy(params, next_obs))

so a vector step costs **at most 1 dispatch, 1 host->device transfer and 1 device->host
read** (an iteration's end packs its arrays into one). ``summary.json`` reports the measured
``dispatches_per_vector_step`` and ``transfers_per_vector_step``. The program kinds
(:class:`StepKind`: plain act, or iteration end with or without learning and target update)
are picked on the host by :func:`scheduler` from :func:`dqn_jax.agent.learning_due` and
:func:`dqn_jax.agent.target_due`, the schedules the JAX driver uses; the end programs donate
the state, so the replay is written in place.

Autoreset: the vector environment uses Gymnasium's ``AutoresetMode.SAME_STEP``: where an
episode ends, ``envs.step`` returns the *reset* observation and the episode's true final
observation in ``info["final_obs"]``. The stored transition's ``next_obs`` is that final
observation (also for a time-limit truncation, which stays non-terminal so the agent bootstraps
through it); the next action is chosen from the reset observation, and no transition ever
connects two episodes.
"""

from __future__ import annotations

import base64
import itertools
import pickle
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import SingleDeviceSharding

from dqn_jax import agent as core
from dqn_jax import checkpoint as ckpt
from dqn_jax import report, run
from dqn_jax.agent import Agent, AgentState, EnvSteps, make_agent
from dqn_jax.config import Config, ConfigError, config_diff
from dqn_jax.envs import EnvSpec, gym_envs, prepare
from dqn_jax.frame_replay import frame_replay
from dqn_jax.replay import Replay

EVAL_MAX_STEPS = 108_000
"""Step cap of one greedy evaluation episode when the environment has no time limit."""

EVAL_ACTION_STREAM = 0xAC7
"""Host evaluation's epsilon coins and random actions: ``env_seeds(seed, EVAL_ACTION_STREAM)``."""


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
    """Host-side steps of the current loop iteration, ``[vector_steps_per_iteration, N, ...]``
    each, the fields of :class:`dqn_jax.agent.EnvSteps`; sent to the device with the
    iteration's last step (see :func:`make_host_agent`)."""

    obs: np.ndarray
    action: np.ndarray  # int32
    reward: np.ndarray  # float32
    next_obs: np.ndarray
    terminated: np.ndarray  # float32, 1.0 = terminal
    done: np.ndarray  # float32, 1.0 = the episode ended (terminated or truncated)

    @staticmethod
    def layout(lead: tuple[int, ...], obs_shape: tuple[int, ...], dtype) -> Layout:
        """``(shape, dtype)`` of each field for leading dims ``lead``."""
        obs, f32 = ((*lead, *obs_shape), np.dtype(dtype)), np.dtype(np.float32)
        return (obs, (lead, np.dtype(np.int32)), (lead, f32), obs, (lead, f32), (lead, f32))

    @staticmethod
    def allocate(config: Config, spec: EnvSpec, dtype: np.dtype) -> Staging:
        """Zeroed staging arrays for one iteration of ``config`` (all seeds' environments)."""
        lead = (config.vector_steps_per_iteration, config.num_seeds * config.num_envs)
        return Staging(
            *(np.zeros(shape, dt) for shape, dt in Staging.layout(lead, spec.obs_shape, dtype))
        )


# --------------------------------------------------------------------------- device programs


class StepKind(NamedTuple):
    """What the program after one vector step does (static, from :func:`scheduler`). A plain
    step only acts (and only if some env acts greedily); at the ``end`` of a loop iteration the
    program also stores the iteration's transitions, may ``learn`` and ``copy_target``, and
    draws the next iteration's exploration plan."""

    end: bool
    learn: bool
    copy_target: bool


PLAIN = StepKind(False, False, False)
"""A step inside an iteration: act only."""


class HostAgent(NamedTuple):
    """The agent core of one host-loop run and its two programs (see :func:`make_host_agent`)."""

    config: Config
    spec: EnvSpec
    obs_dtype: np.dtype
    agent: Agent
    init: Callable[[jax.Array, jax.Array], tuple[AgentState, jax.Array]]
    end: Callable[[AgentState, jax.Array, StepKind], tuple[AgentState, jax.Array]]
    # init/end return ``i32[1 + V, S * N]``: the next actions, then the new iteration's plan
    end_layout: Layout
    act: Callable  # greedy actions of all seeds' envs: (params, obs) or (params, key, j, obs)


def frame_replay_for(config: Config) -> Replay:
    """The replay of an Atari run: one stored frame per transition
    (:func:`dqn_jax.frame_replay.frame_replay`), uniform or prioritized as the variant says,
    building the config's ``n_step`` transitions when sampling."""
    return frame_replay(
        config.buffer_size,
        config.batch_size,
        config.num_envs,
        prioritized=config.prioritized,
        alpha=config.per_alpha,
        eps=config.per_eps,
        priority_on_insert=config.per_priority_on_insert,
        n_step=config.n_step,
    )


def make_host_agent(
    config: Config, *, spec: EnvSpec | None = None, dtype=None, **swaps
) -> HostAgent:
    """The device side of a host-loop run of ``config``: the agent core
    (:func:`dqn_jax.agent.make_agent`, parameters as one flat vector, ``swaps`` passed on)
    and the programs the host calls; ``S = num_seeds``, ``N = num_envs``,
    ``V = vector_steps_per_iteration``. With ``S > 1`` the seeds' states have a leading ``[S]``
    axis and every program is the one-seed program vmapped over it; on the host, seed ``s``'s
    environments are ``s * N ... s * N + N - 1`` of one vector env of ``S * N``.

    - ``init(key, obs) -> (state, out i32[1 + V, S * N])``: the agent's state and the first
      iteration's exploration plan; ``out`` = the first actions for ``obs [S * N, ...]``,
      then the plan. ``key``: ``[2]`` (``S = 1``) or ``[S, 2]``.
    - ``end(state, packed, kind) -> (state, out)``: the last step of an iteration. ``packed`` =
      ``pack(obs, env_step i32[1], *Staging)`` (:data:`end_layout`; ``env_step`` per seed):
      ``end_iteration`` (store each seed's ``V * N`` steps, learn and update the target as
      ``kind`` says), then ``begin_iteration`` of the next and its first actions; ``out`` as
      for ``init``.
    - ``act``: greedy actions ``i32[S * N]`` of a plain step.

    Atari ids get the frame replay unless ``swaps`` has a ``replay``.
    """
    config, checked = prepare(config)
    if config.backend != "gymnasium":
        raise ConfigError(f"backend={config.backend!r}: the host driver runs backend='gymnasium'")
    spec = spec or checked
    dtype = np.dtype(dtype or gym_envs.obs_dtype(config.env))
    if gym_envs.is_atari(config.env) and "replay" not in swaps:
        swaps["replay"] = frame_replay_for(config)
    agent = make_agent(config, spec, obs_dtype=dtype, flat_params=True, **swaps)
    seeds, n, vspi = config.num_seeds, config.num_envs, config.vector_steps_per_iteration
    i32 = np.dtype(np.int32)
    end_layout: Layout = (
        ((seeds * n, *spec.obs_shape), dtype),
        ((1,), i32),
        *Staging.layout((vspi * seeds * n,), spec.obs_shape, dtype),
    )

    def decide(state: AgentState, obs: jax.Array) -> jax.Array:
        return jnp.concatenate([agent.act(state, obs, 0)[None], state.plan])

    def init_one(key: jax.Array, obs: jax.Array) -> tuple[AgentState, jax.Array]:
        k_agent, _, _ = core.split_run_key(key)
        state = agent.begin_iteration(agent.init(k_agent), 0)
        return state, decide(state, obs)

    def end_one(state: AgentState, obs, staged: list, done_steps, kind: StepKind):
        steps = EnvSteps(*(x.reshape(vspi, n, *x.shape[1:]) for x in staged))
        state = agent.end_iteration(state, steps, done_steps, kind.learn, kind.copy_target)
        state = agent.begin_iteration(state, done_steps)
        return state, decide(state, obs)

    if seeds == 1:

        def end(state: AgentState, packed: jax.Array, kind: StepKind):
            obs, env_step, *staged = unpack(packed, end_layout)
            return end_one(state, obs, staged, env_step[0], kind)

        init, act = init_one, agent.greedy
    else:
        by_seed = lambda x: x.reshape(seeds, n, *x.shape[1:])  # noqa: E731 - [S*N] -> [S, N]
        to_host = lambda out: out.swapaxes(0, 1).reshape(out.shape[1], -1)  # noqa: E731

        def init(keys: jax.Array, obs: jax.Array):
            state, out = jax.vmap(init_one)(keys, by_seed(obs))
            return state, to_host(out)

        def end(state: AgentState, packed: jax.Array, kind: StepKind):
            obs, env_step, *staged = unpack(packed, end_layout)
            staged = [  # [V * S * N, ...] -> [S, V * N, ...], seed s's steps in time order
                x.reshape(vspi, seeds, n, *x.shape[1:])
                .swapaxes(0, 1)
                .reshape(seeds, vspi * n, *x.shape[1:])
                for x in staged
            ]
            one = lambda st, o, xs: end_one(st, o, xs, env_step[0], kind)  # noqa: E731
            state, out = jax.vmap(one)(state, by_seed(obs), staged)
            return state, to_host(out)

        if agent.stochastic:
            act = lambda params, key, obs: jax.vmap(agent.greedy)(  # noqa: E731
                params, by_seed(obs), key
            ).reshape(-1)
        else:
            act = lambda params, obs: jax.vmap(agent.greedy)(params, by_seed(obs)).reshape(-1)  # noqa: E731

    return HostAgent(config, spec, dtype, agent, init, end, end_layout, act)


def scheduler(config: Config) -> Callable[[int], StepKind]:
    """``kind_after(vector_step)``: what the program after vector step ``vector_step``
    (0-based) does. An iteration ends every ``vector_steps_per_iteration`` vector steps; whether
    it learns and updates the target is :func:`dqn_jax.agent.learning_due` and
    :func:`dqn_jax.agent.target_due`, the JAX driver's schedule."""
    vspi, n = config.vector_steps_per_iteration, config.num_envs

    def kind_after(vector_step: int) -> StepKind:
        if (vector_step + 1) % vspi:
            return PLAIN
        done = (vector_step + 1) * n
        learn = bool(core.learning_due(config, done))
        return StepKind(True, learn, bool(core.target_due(config, done)))

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
        if agent.agent.stochastic:
            policy, multi = agent.act, agent.config.num_seeds > 1
            if multi:
                keys = jax.vmap(core.act_key, in_axes=(0, None))
                return jax.jit(lambda params, key, j, obs: policy(params, keys(key, j), obs))
            return jax.jit(lambda params, key, j, obs: policy(params, obs, core.act_key(key, j)))
        return jax.jit(agent.act)
    return jax.jit(lambda state, packed: agent.end(state, packed, kind), donate_argnums=0)


@cache
def compiled_greedy(agent: HostAgent) -> Callable:
    """``(params, obs [N, ...]) -> i32[N]``: deterministic greedy actions (noisy layers at their
    mean weights, IQN at evenly spaced fractions), jitted; what evaluation acts with."""
    one_program = agent.agent.stochastic or agent.config.num_seeds > 1
    return jax.jit(agent.agent.greedy) if one_program else compiled(agent, PLAIN)


class Programs:
    """Launches a run's programs and counts dispatches and transfers (see :meth:`step`)."""

    def __init__(self, agent: HostAgent):
        self.agent = agent
        self.programs: dict[StepKind, Callable] = {}
        self.greedy = compiled(agent, PLAIN)
        self.dispatches = 0
        self.transfers = 0

    def step(self, state: AgentState, host_input: np.ndarray, kind: StepKind):
        """Run the program after one vector step: ``(state, out)`` with ``out`` numpy
        (greedy actions ``i32[N]`` for a plain step, whose ``host_input`` is the observation
        ``[N, *obs_shape]``; at an iteration's end, actions and plan ``i32[1 + V, N]``, and
        ``host_input`` is the packed iteration). One dispatch, one host->device transfer
        (``host_input``, handed straight to the program: JAX's C++ path moves it ~10x faster
        than ``jax.device_put``), one device->host read."""
        if not kind.end:
            return state, self.act(state, 1, host_input)
        program = self.programs.get(kind) or self.programs.setdefault(
            kind, compiled(self.agent, kind)
        )
        state, out = program(state, host_input)
        self.dispatches += 1
        self.transfers += 2
        return state, np.asarray(out)

    def act(self, state: AgentState, j: int, obs: np.ndarray) -> np.ndarray:
        """A plain step's program: greedy actions ``i32[N]`` for ``obs [N, *obs_shape]`` at step
        ``j`` of the iteration (the hot path: one dispatch, one transfer each way, nothing
        else; a stochastic agent's acting noise also reads the state's key and ``j``)."""
        self.dispatches += 1
        self.transfers += 2
        if self.agent.agent.stochastic:
            return np.asarray(self.greedy(state.learner.params, state.key, j, obs))
        return np.asarray(self.greedy(state.learner.params, obs))

    def warm_up(self, state: AgentState, kinds: set[StepKind]) -> float:
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


def evaluate(
    agent: HostAgent, flat_params: jax.Array, episodes: int, seed: int, epsilon: float = 0.0
) -> np.ndarray:
    """Greedy returns ``f32[episodes]``: one episode in each of ``episodes`` fresh environments
    (the evaluation stream of run seed ``seed``: :func:`~dqn_jax.envs.gym_envs.env_seeds`), run
    to its end (or :data:`EVAL_MAX_STEPS` without a time limit); epsilon-greedy with
    ``epsilon`` > 0 (coins and random actions from their own stream of the run seed)."""
    greedy = compiled_greedy(agent)
    config = agent.config
    envs = gym_envs.make_vector_env(config.env, episodes, **gym_envs.env_kwargs(config))
    coins = np.random.default_rng(gym_envs.env_seeds(seed, EVAL_ACTION_STREAM, 1)[0])
    try:
        obs, _ = envs.reset(seed=gym_envs.env_seeds(seed, core.EVAL_STREAM, episodes))
        total = np.zeros(episodes, np.float64)
        alive = np.ones(episodes, bool)
        for _ in range(agent.spec.max_episode_steps or EVAL_MAX_STEPS):
            actions = np.asarray(greedy(flat_params, obs))
            if epsilon > 0:
                explore = coins.random(episodes) < epsilon
                randoms = coins.integers(agent.spec.num_actions, size=episodes)
                actions = np.where(explore, randoms, actions).astype(actions.dtype)
            obs, reward, terminated, truncated, _ = envs.step(actions)
            total += np.where(alive, reward, 0.0)
            alive &= ~(terminated | truncated)
            if not alive.any():
                break
    finally:
        envs.close()
    return total.astype(np.float32)


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
    resume: bool = False,
    force: bool = False,
    checkpoint_every: int = run.DEFAULT_CHECKPOINT_EVERY,
    keep_checkpoints: int = ckpt.DEFAULT_KEEP,
    stop_after_chunks: int | None = None,
    tensorboard: bool = False,
):
    """Run ``config`` (its ``num_seeds`` seeds in one vector env) on Gymnasium environments;
    write the run directory if
    ``run_dir`` is given. Same files, checkpoints and options as :func:`dqn_jax.run.train`,
    written by the same reporter and checkpoint code; a checkpoint holds the device state, the
    host loop's values and the environments' whole state
    (:func:`~dqn_jax.envs.gym_envs.save_env_state`), so ``resume`` continues bit-identically
    to an uninterrupted run. Ctrl-C saves at the end of the running chunk and raises
    :class:`dqn_jax.run.TrainingInterrupted`.

    Returns a :class:`dqn_jax.report.RunResult`: ``state`` is the final
    :class:`~dqn_jax.agent.AgentState` with a leading seed axis and the parameters
    unflattened (``state.learner.params`` and ``target_params`` are the network's pytrees;
    the optimizer state stays flat); ``eval_returns`` is ``f32[num_seeds, eval_episodes]``.
    ``devices``: the first one runs the programs (default: JAX's default device). ``agent``
    overrides :func:`make_host_agent`. Raises :class:`dqn_jax.report.NonFiniteError` at the first
    chunk boundary where the loss or the parameters are NaN/inf; :class:`ConfigError` for a
    field this backend cannot honour (a prefill, probe states).
    """
    config, _ = prepare(config)
    agent = agent or make_host_agent(config)
    changed = config_diff(agent.config, config, ignore=HOST_ONLY_FIELDS)
    if changed:
        raise ConfigError(
            f"the agent was built for another config ({'; '.join(changed)}); "
            f"a shared agent may differ only in {', '.join(HOST_ONLY_FIELDS)}"
        )
    device = (devices or jax.devices())[0]
    out = Path(run_dir) if run_dir is not None else None
    shapes = checkpoint_shapes(agent) if out is not None else None
    tb = run.open_run_dir(config, shapes, out, resume, force, keep_checkpoints, tensorboard)
    if out is not None:
        report.write_json(out / "config.json", config.to_dict())
        if not resume:
            (out / "metrics.jsonl").write_text("")
    options = dict(
        resume=resume,
        checkpoint_every=checkpoint_every,
        keep=keep_checkpoints,
        stop_after=stop_after_chunks,
        tb=tb,
    )
    with jax.default_device(device):
        total = config.num_seeds * config.num_envs
        envs = gym_envs.make_vector_env(config.env, total, **gym_envs.env_kwargs(config))
        try:
            return _run(agent, config, envs, out, progress, echo, device, **options)
        finally:
            envs.close()


def checkpoint_shapes(agent: HostAgent) -> dict:
    """Shapes of :meth:`Loop.checkpoint` (what the checkpoint's array part holds)."""
    config, spec = agent.config, agent.spec
    total = config.num_seeds * config.num_envs
    obs = jax.ShapeDtypeStruct((total, *spec.obs_shape), agent.obs_dtype)
    keys = (2,) if config.num_seeds == 1 else (config.num_seeds, 2)
    state, first = jax.eval_shape(agent.init, jax.ShapeDtypeStruct(keys, jnp.uint32), obs)
    rows, n = first.shape  # the actions, then the plan's rows
    actions = jax.ShapeDtypeStruct((n,), first.dtype)
    plan = jax.ShapeDtypeStruct((rows - 1, n), first.dtype)
    return {"agent": state, "obs": obs, "actions": actions, "plan": plan}


HOST_ONLY_FIELDS = ("seed", "num_chunks", "eval_episodes", "eval_every_chunks", "eval_epsilon")
"""Fields only the host loop reads: runs may share one :class:`HostAgent` (and its compiled
programs) across them."""


class Loop:
    """The host loop's running values between chunks: device state, current observation,
    next actions and the iteration's plan, vector steps done, running episode statistics."""

    def __init__(self, agent: HostAgent, programs: Programs, envs, seed: int, echo=print):
        self.agent, self.programs, self.envs, self.echo = agent, programs, envs, echo
        config = agent.config
        config = config.replace(seed=seed)
        self.seeds = run.run_seeds(config).tolist()
        self.unsaveable_warned = False
        self.obs, _ = envs.reset(seed=self.env_seeds(gym_envs.TRAIN_STREAM))
        keys = run.seed_keys(config)
        # JAX's rolled threefry, unlike the JAX backend's init (dqn_jax.rng.unrolled_threefry):
        # this program also begins the first iteration and acts, reading its draws in several
        # places, and XLA copies an unrolled hash into each (measured: c51's compiled in 3.6 s
        # unrolled, 1.4 s rolled; ddqn's 1.0 s either way).
        state, first = jax.jit(agent.init)(keys[0] if config.num_seeds == 1 else keys, self.obs)
        self.state, self.actions, self.plan = state, np.asarray(first[0]), np.asarray(first[1:])
        total = envs.num_envs
        self.running = (np.zeros(total), np.zeros(total, np.int64))  # running episodes' stats
        self.vstep = 0
        self.kind_after = scheduler(agent.config)
        self.stage = Staging.allocate(agent.config, agent.spec, agent.obs_dtype)

    def env_seeds(self, role: int, at: int | None = None) -> list[int]:
        """Gymnasium seeds of all seeds' environments in stream ``role``, seed-major."""
        n = self.agent.config.num_envs
        return [x for s in self.seeds for x in gym_envs.env_seeds(s, role, n, at=at)]

    def checkpoint(self) -> tuple[dict, dict]:
        """``(arrays, host)``: the device state and the loop's arrays (for the checkpoint's
        array part), and the rest as JSON values, the environments' state included."""
        arrays = {"agent": self.state, "obs": self.obs, "actions": self.actions, "plan": self.plan}
        host = {
            "vstep": self.vstep,
            "ep_return": self.running[0].tolist(),  # exact: JSON floats round-trip
            "ep_length": self.running[1].tolist(),
            "envs": None,
        }
        try:
            host["envs"] = base64.b64encode(gym_envs.save_env_state(self.envs)).decode("ascii")
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            if not self.unsaveable_warned:
                self.unsaveable_warned = True
                self.echo(
                    f"warning: {self.agent.config.env}'s state cannot be saved "
                    f"({type(err).__name__}: {err}); a resume starts new episodes there"
                )
        return arrays, host

    def restore(self, arrays: dict, host: dict) -> None:
        """Continue from :meth:`checkpoint`'s values."""
        # Uncommitted, as the programs were compiled for (a committed restored array would
        # compile every program again).
        self.state = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), arrays["agent"])
        self.obs = np.asarray(arrays["obs"], self.obs.dtype)
        self.actions = np.asarray(arrays["actions"], self.actions.dtype)
        self.plan = np.asarray(arrays["plan"], self.plan.dtype)
        self.vstep = int(host["vstep"])
        self.running = (
            np.asarray(host["ep_return"], np.float64),
            np.asarray(host["ep_length"], np.int64),
        )
        if host["envs"] is not None:
            gym_envs.restore_env_state(self.envs, base64.b64decode(host["envs"]))
            return
        # The environments' state was not saved: new episodes from their own stream, the
        # unfinished ones (never logged) and the pending n-step sums dropped, the iteration's
        # exploration plan kept, its first actions re-decided for the new observations.
        total = self.envs.num_envs
        self.obs, _ = self.envs.reset(seed=self.env_seeds(gym_envs.RESUME_STREAM, self.vstep))
        restart = self.agent.agent.restart_returns
        if self.agent.config.num_seeds > 1:
            restart = jax.vmap(restart)
        self.state = jax.jit(restart)(self.state)
        self.running = (np.zeros(total), np.zeros(total, np.int64))
        greedy = self.programs.act(self.state, 0, self.obs)
        self.actions = np.where(self.plan[0] >= 0, self.plan[0], greedy).astype(self.actions.dtype)

    def run(self, size: int):
        """Step ``size`` vector steps (whole iterations); ``(lengths, returns)`` ``[size, S * N]``
        of the episodes that ended (0 elsewhere). The hot path: locals only."""
        config, programs, envs, stage = self.agent.config, self.programs, self.envs, self.stage
        n, vspi, kind_after = config.num_envs, config.vector_steps_per_iteration, self.kind_after
        total = envs.num_envs  # all seeds' environments
        state, obs, actions, plan, vstep = self.state, self.obs, self.actions, self.plan, self.vstep
        explores = (plan >= 0).all(axis=1).tolist()  # per step of the iteration: no greedy env
        rewards, dones = np.zeros((size, total)), np.zeros((size, total), bool)
        for t in range(size):
            j = t % vspi
            next_obs, reward, terminated, truncated, info = envs.step(actions)
            done = terminated | truncated
            stage.obs[j], stage.action[j], stage.reward[j] = obs, actions, reward
            stage.next_obs[j] = gym_envs.stored_next_obs(next_obs, done, info) if info else next_obs
            stage.terminated[j], stage.done[j] = terminated, done
            rewards[t], dones[t] = reward, done
            obs = next_obs
            if j == vspi - 1:  # the iteration's end: 1 dispatch
                vstep += vspi
                packed = pack(obs, np.array([vstep * n], np.int32), *stage)
                state, decided = programs.step(state, packed, kind_after(vstep - 1))
                actions, plan = decided[0], decided[1:]
                explores = (plan >= 0).all(axis=1).tolist()
            elif explores[j + 1]:  # every env explores: no device call
                actions = plan[j + 1]
            else:
                greedy = programs.act(state, j + 1, obs)
                # With one env, "not every env explores" means it acts greedily.
                actions = greedy if total == 1 else np.where(plan[j + 1] >= 0, plan[j + 1], greedy)
        self.state, self.obs, self.actions, self.plan, self.vstep = state, obs, actions, plan, vstep
        lengths, returns, self.running = episode_stats(rewards, dones, *self.running)
        return lengths, returns


def _run(agent: HostAgent, config: Config, envs, out, progress, echo, device, **options):
    n, vspi = config.num_envs, config.vector_steps_per_iteration
    programs = Programs(agent)
    start = time.perf_counter()
    loop = Loop(agent, programs, envs, config.seed, echo)
    compile_s = time.perf_counter() - start + programs.warm_up(loop.state, kinds_in_run(config))
    echo(
        f"{config.env} (gymnasium, {n} env(s)) | {config.variant} | {config.num_seeds} seed(s) x "
        f"{config.total_steps:,} env steps | {device} | compiled in {compile_s:.1f}s"
    )
    run_start = time.perf_counter()
    sizes = [k * vspi for k in report.chunk_sizes(config.num_iterations, config.num_chunks)]
    bounds = [v * n for v in itertools.accumulate(sizes, initial=0)]
    log, evals, done = None, [], 0
    if options["resume"]:
        target = ckpt.abstract_state(checkpoint_shapes(agent), SingleDeviceSharding(device))
        restored, log, evals, done = run.resume_from(out, target, bounds, echo)
        loop.restore(restored.state, restored.host["host_loop"])
    start_vstep = loop.vstep
    reporter = report.Reporter(
        config,
        loop.seeds,
        out,
        len(sizes),
        log=log,
        evals=evals,
        start_step=bounds[done],
        tb=options["tb"],
        progress=progress,
        echo=echo,
    )
    saver = run.Checkpointer(out, options["keep"], config)
    reset = jax.jit(core.reset_stats, donate_argnums=0)
    every, stop_after = options["checkpoint_every"], options["stop_after"]
    with run.deferred_sigint(echo) as interrupted:
        for chunk, size in enumerate(sizes[done:], start=done + 1):
            chunk_start, first_step, is_last = (
                time.perf_counter(),
                loop.vstep * n,
                chunk == len(sizes),
            )
            loop.state = reset(loop.state)
            lengths, returns = loop.run(size)
            env_step = loop.vstep * n
            finite = params_finite(loop.state.learner.params)
            stats = report.chunk_stats(jax.device_get(loop.state.stats), finite)
            reporter.check_finite(chunk, first_step, env_step, stats, saver.last_good())
            window = report.extract_episodes(
                by_seed(lengths, config), by_seed(returns, config), first_step // n, n
            )
            periodic = config.eval_every_chunks and chunk % config.eval_every_chunks == 0
            evaluation = None
            if config.eval_episodes and periodic and not is_last:
                evaluation = evaluate_params(agent, loop.state.learner.params, loop.seeds, config)
            seconds = time.perf_counter() - chunk_start
            reporter.chunk(chunk, env_step, window, stats, evaluation, seconds, size * n)
            stop = interrupted[0] or chunk == stop_after
            due = every and chunk % every == 0 and not is_last
            path = _save(saver, chunk, loop, reporter) if stop or due else None
            if run.end_early(chunk, is_last, interrupted[0], stop_after, path, out, reporter):
                summary = {"stopped_after_chunk": chunk, "env_step": env_step}
                state = result_state(agent, loop.state)
                return report.RunResult(state, reporter.episodes(), np.zeros((0, 0)), summary)
    reporter.bar.close()
    final_eval = np.zeros((0, 0), np.float32)
    if config.eval_episodes:
        final_eval = evaluate_params(agent, loop.state.learner.params, loop.seeds, config)
    jax.block_until_ready(loop.state)
    run_s = time.perf_counter() - run_start
    env_step = loop.vstep * n
    if saver.manager is not None and saver.last_saved != env_step:
        _save(saver, len(sizes), loop, reporter)
    vsteps = max(loop.vstep - start_vstep, 1)
    extra = dict(
        num_envs=config.num_envs,
        dispatches_per_vector_step=programs.dispatches / vsteps,
        transfers_per_vector_step=programs.transfers / vsteps,
        replay_bytes_per_transition=round(
            sum(x.nbytes for x in jax.tree.leaves(loop.state.replay))
            / (config.buffer_size * config.num_seeds),
            1,
        ),
    )
    title = f"{config.env} - {config.variant} (gymnasium)"
    summary = reporter.finish(final_eval, env_step, compile_s, run_s, [device], title, **extra)
    return report.RunResult(
        result_state(agent, loop.state), reporter.episodes(), final_eval, summary
    )


def evaluate_checkpoint(
    run_dir: str | Path,
    episodes: int | None = None,
    step: int | None = None,
    *,
    echo: Callable[[str], Any] = print,
) -> dict:
    """:func:`dqn_jax.run.evaluate_checkpoint` for a Gymnasium-backend run: each seed's
    parameters of checkpoint ``step`` (default: the latest readable) evaluated on its own
    evaluation stream; writes and returns ``RUN_DIR/eval_<step>.json``."""
    out = Path(run_dir)
    config = run.load_config(out)
    config = config.replace(eval_episodes=episodes or config.eval_episodes or 10)
    agent = make_host_agent(config)
    device = jax.devices()[0]
    target = ckpt.abstract_state(checkpoint_shapes(agent), SingleDeviceSharding(device))
    try:
        restored = ckpt.restore(out, target, step, echo=echo)
    except ckpt.CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    seeds = run.run_seeds(config).tolist()
    returns = evaluate_params(agent, restored.state["agent"].learner.params, seeds, config)
    return run.write_eval(out, restored.step, seeds, returns, echo)


def by_seed(x: np.ndarray, config: Config) -> np.ndarray:
    """``[T, S * N]`` (all seeds' environments, seed-major) as ``[S, T, N]``."""
    return x.reshape(x.shape[0], config.num_seeds, config.num_envs).swapaxes(0, 1)


def evaluate_params(
    agent: HostAgent, params: jax.Array, seeds: list[int], config: Config
) -> np.ndarray:
    """``f32[S, eval_episodes]``: :func:`evaluate` of ``params [P]`` (one seed) or
    ``[S, P]``, seed ``seeds[s]``'s on its own evaluation stream, with the run ``config``'s
    ``eval_episodes`` and ``eval_epsilon`` (a shared agent's config may differ in those)."""
    per_seed = [params] if config.num_seeds == 1 else list(params)
    return np.stack(
        [
            evaluate(agent, p, config.eval_episodes, seed, config.eval_epsilon)
            for p, seed in zip(per_seed, seeds, strict=True)
        ]
    )


def _save(saver: run.Checkpointer, chunk: int, loop: Loop, reporter: report.Reporter):
    arrays, host = loop.checkpoint()
    iteration = loop.vstep // loop.agent.config.vector_steps_per_iteration
    return saver.save(chunk, iteration, arrays, reporter, host_loop=host)


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


def params_finite(flat_params: jax.Array) -> np.ndarray:
    """``bool[S]``: whether every parameter of each seed is finite (``flat_params [P]`` or
    ``[S, P]``; one small dispatch and read)."""
    return np.atleast_1d(jax.device_get(jnp.all(jnp.isfinite(flat_params), axis=-1)))


def result_state(agent: HostAgent, state: AgentState) -> AgentState:
    """``state`` with unflattened network parameters and a leading seed axis (of 1 for one
    seed), the shape :func:`dqn_jax.run.train` returns."""
    multi = agent.config.num_seeds > 1
    unravel = jax.vmap(agent.agent.unravel) if multi else agent.agent.unravel
    learner = state.learner._replace(
        params=unravel(state.learner.params), target_params=unravel(state.learner.target_params)
    )
    state = state._replace(learner=learner)
    return state if multi else jax.tree.map(lambda x: x[None], state)
