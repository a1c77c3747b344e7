"""Gymnasium environments, stepped on the host: ids, specs, the vector env, stored next obs.

Any Gymnasium id with a discrete action space and a Box observation space; ``ALE/...`` ids get
the Nature DQN preprocessing of :mod:`dqn_jax.envs.atari`; ``MinAtar/...`` ids are the original
MinAtar games of the ``minatar`` package (the ``minatar`` extra). The environments of a run live
in a :class:`dqn_jax.envs.vector_env.SameStepVectorEnv` (same-step autoreset), or for Atari
ids by default in ale-py's C++ vector env under the same contract
(:mod:`dqn_jax.envs.ale_vector`).
"""

from __future__ import annotations

import pickle
from functools import cache

import numpy as np

from dqn_jax.envs import EnvSpec, atari, unknown_env_message
from dqn_jax.envs.vector_env import SameStepVectorEnv


@cache
def is_atari(env_id: str) -> bool:
    """Whether ``env_id`` gets the Atari setup (:mod:`dqn_jax.envs.atari` preprocessing, the frame
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


def register_minatar(env_id: str) -> None:
    """Register the ``minatar`` package's Gymnasium ids when ``env_id`` is a ``MinAtar/...`` one:
    ``MinAtar/Breakout-v1`` etc., the original MinAtar protocol (sticky actions with probability
    0.1, no step cap, ``bool[10, 10, C]`` observations; v1 the minimal action set, as gymnax's,
    v0 all six actions). ``ValueError`` with the install hint when the package is missing."""
    import gymnasium as gym

    if not env_id.startswith("MinAtar/") or "MinAtar/Breakout-v1" in gym.registry:
        return
    try:
        from minatar import gym as minatar_gym
    except ImportError:
        raise ValueError(
            f"env={env_id!r} needs the minatar package: pip install -e '.[minatar]'"
        ) from None
    minatar_gym.register_envs()


def make_env(env_id: str, *, terminal_on_life_loss: bool = False):
    """One Gymnasium environment: ``gym.make(env_id)``, or for an Atari id
    :func:`dqn_jax.envs.atari.make_atari_env` (Nature DQN preprocessing, ``uint8[4, 84, 84]``
    observations, raw rewards)."""
    import gymnasium as gym

    if is_atari(env_id):
        return atari.make_atari_env(env_id, terminal_on_life_loss=terminal_on_life_loss)
    register_minatar(env_id)
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
    register_minatar(env_id)
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


def env_kwargs(config) -> dict:
    """Keyword arguments of :func:`make_vector_env` (and, but for ``atari_envs``, of
    :func:`make_env`) that come from ``config``."""
    kwargs = {"terminal_on_life_loss": True} if config.terminal_on_life_loss else {}
    if is_atari(config.env):
        kwargs["atari_envs"] = config.atari_envs
    return kwargs


def obs_dtype(env_id: str) -> np.dtype:
    """dtype the replay stores observations in: ``uint8`` for image (uint8) observations, else
    ``float32``."""
    env = make_env(env_id)
    try:
        dtype = np.dtype(env.observation_space.dtype)
    finally:
        env.close()
    return np.dtype(np.uint8) if dtype == np.uint8 else np.dtype(np.float32)


TRAIN_STREAM = 0
"""The role of training environments in :func:`env_seeds` (evaluation's is
:data:`dqn_jax.agent.EVAL_STREAM`)."""


RESUME_STREAM = 0x2E5
"""The role of training environments started afresh by a resume whose environments' state
could not be saved (:func:`env_seeds` with ``at`` = the vector step resumed at)."""


def env_seeds(seed: int, role: int, num_envs: int, at: int | None = None) -> list[int]:
    """Gymnasium seeds (32-bit ints) of ``num_envs`` host environments of the run with seed
    ``seed`` in stream ``role``: env ``i`` from ``SeedSequence((seed, role, i))`` (with ``at``:
    ``(seed, role, at, i)``), so no two runs, roles or environments share a stream
    (``seed + i`` would give run ``s``'s env 1 the stream of run ``s + 1``'s env 0)."""
    words = (seed, role) if at is None else (seed, role, at)
    return [
        int(np.random.SeedSequence((*words, i)).generate_state(1, np.uint32)[0])
        for i in range(num_envs)
    ]


def make_vector_env(env_id: str, num_envs: int, *, atari_envs: str = "ale", **env_kwargs):
    """``num_envs`` copies of ``env_id`` with same-step autoreset (the final observation of an
    ended episode is in ``info["final_obs"]``): a :class:`dqn_jax.vector_env.SameStepVectorEnv`,
    which returns what ``gymnasium.vector.SyncVectorEnv`` with ``AutoresetMode.SAME_STEP`` does,
    at about half its cost per step on CartPole; for an Atari id with ``atari_envs="ale"``,
    ale-py's C++ vector environment in the same contract
    (:class:`dqn_jax.envs.ale_vector.AleVectorEnv`)."""
    if atari_envs == "ale" and is_atari(env_id):
        from dqn_jax.envs.ale_vector import AleVectorEnv

        return AleVectorEnv(env_id, num_envs, **env_kwargs)
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


def _layers(env):
    """``env`` and every environment it wraps, outermost first."""
    while True:
        yield env
        if "env" not in vars(env):
            return
        env = vars(env)["env"]


def save_env_state(envs) -> bytes:
    """The whole state of a :class:`~dqn_jax.envs.vector_env.SameStepVectorEnv`: every
    wrapper's and environment's attributes (their physics state, step counters, frame
    buffers, ``np_random``) and, for ALE games, the emulator with its RNG
    (``cloneState(include_rng=True)``). :func:`restore_env_state` puts it back into a vector env
    made the same way, which then steps exactly as ``envs`` would have."""
    if not isinstance(envs, SameStepVectorEnv):
        raise TypeError(
            f"{type(envs).__name__} cannot save its environments' state (ale-py's C++ "
            "emulators; --atari-envs gymnasium checkpoints them)"
        )
    subs = []
    for sub in envs.envs:
        chain = []
        for layer in _layers(sub):
            own = {k: v for k, v in vars(layer).items() if k not in ("env", "ale")}
            ale = vars(layer).get("ale")
            state = None if ale is None else ale.cloneState(include_rng=True)
            chain.append((type(layer).__name__, own, state))
        subs.append(chain)
    return pickle.dumps(({k: v for k, v in vars(envs).items() if k != "envs"}, subs))


def restore_env_state(envs, blob: bytes) -> None:
    """Put :func:`save_env_state`'s ``blob`` back into ``envs`` (made by
    :func:`make_vector_env` with the same id, count and options); ``ValueError`` if the wrapper
    chains differ."""
    vec, subs = pickle.loads(blob)
    if len(subs) != len(envs.envs):
        raise ValueError(f"saved state of {len(subs)} environments, not {len(envs.envs)}")
    for sub, chain in zip(envs.envs, subs, strict=True):
        layers = list(_layers(sub))
        if [type(x).__name__ for x in layers] != [name for name, _, _ in chain]:
            raise ValueError("the saved environment state has another wrapper chain")
        for layer, (_, own, ale) in zip(layers, chain, strict=True):
            vars(layer).update(own)
            if ale is not None:
                layer.ale.restoreState(ale)
    vars(envs).update(vec)
