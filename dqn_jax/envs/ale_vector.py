"""Atari on ale-py's own C++ vector environment, with the observations of the Gymnasium path.

``ale_py.vector_env.AtariVectorEnv`` steps ``N`` emulators in C++ threads and does the Nature
preprocessing there (frame skip 4 with max-pooling, 84x84 grayscale, 4 stacked frames, up to
30 no-op starts, sticky actions). :class:`AleVectorEnv` wraps it in the host driver's contract,
the one :class:`dqn_jax.envs.vector_env.SameStepVectorEnv` keeps for
:func:`dqn_jax.envs.atari.make_atari_env`'s environments:

- same-step autoreset, the true final observation in ``info["final_obs"]``;
- raw rewards (``reward_clipping=False``: the learner clips), no FIRE on reset (Gymnasium's
  ``AtariPreprocessing`` presses nothing), the id's sticky-action probability, action set and
  episode frame cap (``gym.registry[env_id].kwargs``);
- *reset padding*: ALE pads a new episode's stack with zero frames, where
  ``FrameStackObservation`` (and so :mod:`dqn_jax.frame_replay`, which rebuilds stacks)
  repeats the reset frame; the first ``stack - 1`` observations of each episode are patched
  here on the host to the latter;
- ``terminal_on_life_loss``: ALE's ``episodic_life``, which (with same-step autoreset) ends the
  episode and resets the game, as Gymnasium's option does.

Where neither path draws randomness (no sticky actions, no no-op starts) the two give
bit-identical observations, rewards and ends (``tests/test_atari.py``). Where they cannot
agree: the no-op counts and sticky-action coins come from different generators, so the same
seed plays different episodes. The emulators' state cannot be saved: a resumed run starts new
episodes (the host driver's fallback).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

STACK = 4
DEFAULT_FRAME_CAP = 108_000  # emulator frames per episode: the -v5 ids' own cap


def ale_settings(env_id: str) -> dict:
    """``AtariVectorEnv`` keyword arguments that come from the registered id ``env_id``: its
    game, sticky-action probability, action set and episode cap in emulator frames."""
    import gymnasium as gym

    from dqn_jax.envs import atari

    atari.is_atari_id(env_id)  # registers ale-py's ids
    spec = gym.registry[env_id]
    kwargs = spec.kwargs
    frames = kwargs.get("max_num_frames_per_episode")
    if not frames and spec.max_episode_steps:
        frames = spec.max_episode_steps * int(kwargs.get("frameskip", 1))
    return dict(
        game=kwargs["game"],
        repeat_action_probability=float(kwargs.get("repeat_action_probability", 0.25)),
        full_action_space=bool(kwargs.get("full_action_space", False)),
        max_num_frames_per_episode=int(frames or DEFAULT_FRAME_CAP),
    )


class AleVectorEnv(VectorEnv):
    """``num_envs`` games of ``env_id`` in ale-py's ``AtariVectorEnv`` (see the module doc).

    ``step(actions int[N]) -> (obs uint8[N, 4, 84, 84], reward f64[N], terminated bool[N],
    truncated bool[N], info)``; ``info`` holds ``final_obs`` (``uint8[N, 4, 84, 84]``,
    meaningful where an episode ended) when one did. ``num_threads``: emulator threads
    (default: one per environment, at most the machine's cores).
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        *,
        terminal_on_life_loss: bool = False,
        noop_max: int = 30,
        num_threads: int | None = None,
    ):
        settings = ale_settings(env_id)
        try:
            from ale_py.vector_env import AtariVectorEnv
        except ImportError as err:
            raise ImportError(
                "atari_envs='ale' needs ale-py >= 0.12 (its AtariVectorEnv): pip install -e "
                "'.[atari]', or pass --atari-envs gymnasium"
            ) from err

        self.env = AtariVectorEnv(
            settings.pop("game"),
            num_envs,
            num_threads=num_threads or min(num_envs, os.cpu_count() or 1),
            autoreset_mode=AutoresetMode.SAME_STEP,
            reward_clipping=False,
            use_fire_reset=False,
            episodic_life=terminal_on_life_loss,
            noop_max=noop_max,
            img_height=84,
            img_width=84,
            grayscale=True,
            stack_num=STACK,
            frameskip=4,
            maxpool=True,
            **settings,
        )
        self.num_envs = num_envs
        self.single_observation_space = self.env.single_observation_space
        self.single_action_space = self.env.single_action_space
        self.observation_space = self.env.observation_space
        self.action_space = self.env.action_space
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}
        self._age = np.zeros(num_envs, np.int64)  # steps since each episode's reset

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict | None = None):
        """Reset every game (game ``i`` seeded ``seed + i`` for an int ``seed``, ``seed[i]``
        for a list of ``num_envs`` seeds, unseeded for None; seeds are taken modulo ``2**31``,
        ALE's range): ``(obs, {})``."""
        if seed is not None and not isinstance(seed, int | np.integer):
            seed = np.asarray([int(s) % 2**31 for s in seed], np.int64)
            if seed.shape != (self.num_envs,):
                raise ValueError(f"{len(seed)} seeds for {self.num_envs} environments")
        elif seed is not None:
            seed = int(seed) % 2**31
        obs, _ = self.env.reset(seed=seed, options=options)
        self._age[:] = 0
        return reset_padded(obs, self._age), {}

    def step(self, actions):
        """Step every game; reset those whose episode ended (see the class doc)."""
        obs, reward, terminated, truncated, info = self.env.step(
            np.asarray(actions, np.int32).reshape(self.num_envs)
        )
        done = terminated | truncated
        final = info.get("final_obs")
        self._age += 1
        out_info = {}
        if done.any():
            out_info = {"final_obs": reset_padded(final, self._age), "_final_obs": done.copy()}
            self._age[done] = 0
        return (
            reset_padded(obs, self._age),
            reward.astype(np.float64),
            terminated,
            truncated,
            out_info,
        )

    def close_extras(self, **kwargs) -> None:
        """Close the C++ vector environment (called by ``close``)."""
        self.env.close()


def reset_padded(obs: np.ndarray, age: np.ndarray) -> np.ndarray:
    """``obs uint8[N, S, H, W]`` with the zero padding of young episodes replaced by copies of
    their first frame: env ``i``, ``age[i]`` steps after its reset, has ``S - 1 - age[i]``
    padding frames (none once ``age[i] >= S - 1``). A new array where anything changed."""
    stack = obs.shape[1]
    young = np.flatnonzero(age < stack - 1)
    if young.size == 0:
        return obs
    obs = obs.copy()
    for i in young:
        pad = stack - 1 - int(age[i])
        obs[i, :pad] = obs[i, pad]
    return obs
