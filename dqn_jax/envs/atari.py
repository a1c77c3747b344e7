"""Atari (ALE) environments with the Nature DQN preprocessing, and its hyperparameters.

:func:`make_atari_env` builds one Gymnasium environment::

    gym.make(env_id, frameskip=1, ...)          # ale-py; sticky actions as the id defines them
    -> AtariPreprocessing(...)                  # no-op starts, frame skip + max-pool of the last
                                                # two frames, 84x84 grayscale uint8, no scaling
    -> FrameStackObservation(stack)             # uint8[stack, 84, 84], oldest frame first

Rewards are *not* clipped in the environment, so episode returns are raw game scores; the
learner clips with :func:`clip_reward` when it stores a transition.

Padding at episode start (gymnasium 1.3, checked by ``tests/test_atari.py``):
``FrameStackObservation``'s default ``padding_type="reset"`` fills the stack with copies of the
reset observation, so the first observation of an episode is ``[o0, o0, o0, o0]`` and the next
``[o0, o0, o0, o1]``. :mod:`dqn_jax.frame_replay` rebuilds stacks the same way.

``terminal_on_life_loss=True`` uses ``AtariPreprocessing``'s option, which ends the *episode*
on a life loss: a vector environment then resets the whole game, so every episode is one life
and its return is not a game score. (The Nature agent's life-loss terminal only cut
bootstrapping; the game went on.) Keep the default ``False`` when reporting scores.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

ATARI_INSTALL_HINT = "pip install -e '.[atari]'"
ALE_ENTRY_POINT = "ale_py.env:AtariEnv"

NATURE_DQN: dict[str, Any] = {
    # Mnih et al. (2015), "Human-level control through deep reinforcement learning", Extended
    # Data Table 1. The paper's "frames" are agent steps: with an action repeat of 4, 50M
    # frames are 200M emulator frames (the paper's "38 days of game experience").
    "total_frames": 50_000_000,  # agent steps of training
    "replay_size": 1_000_000,  # transitions
    "batch_size": 32,
    "history_length": 4,  # stacked frames per observation
    "action_repeat": 4,  # emulator frames per agent step (max-pool of the last two)
    "noop_max": 30,  # at most this many no-op actions at the start of an episode
    "gamma": 0.99,
    "update_every": 4,  # agent steps between gradient updates
    # Counted in gradient updates, as the paper does: 10,000 updates = 40,000 agent steps.
    "target_update_updates": 10_000,
    "target_update_steps": 40_000,  # the same period in agent steps
    "learning_starts": 50_000,  # agent steps of uniform random policy before learning
    "eps_start": 1.0,
    "eps_end": 0.1,
    "eps_decay_steps": 1_000_000,  # agent steps of linear decay
    "eps_eval": 0.05,
    # DeepMind's RMSProp (Graves, 2013), centered: g <- 0.95 g + 0.05 grad,
    # n <- 0.95 n + 0.05 grad^2, step = lr * grad / sqrt(n - g^2 + 0.01). It is exactly
    # optax.rmsprop(2.5e-4, decay=0.95, eps=0.01, centered=True) (eps_in_sqrt=True, the
    # default; no momentum): one `decay` serves both moments, both 0.95 here. The "gradient
    # momentum" is the centering average g, not heavy-ball momentum.
    "optimizer": "rmsprop",
    "lr": 2.5e-4,
    "rmsprop_grad_momentum": 0.95,
    "rmsprop_sq_grad_momentum": 0.95,
    "rmsprop_min_sq_grad": 0.01,
    "optax_rmsprop": {"decay": 0.95, "eps": 0.01, "centered": True, "eps_in_sqrt": True},
    # Error clipping: the TD error's gradient is clipped to [-1, 1], i.e. the Huber loss with
    # delta 1.
    "loss": "huber",
    "huber_delta": 1.0,
    "reward_clipping": "sign",  # clip_reward, at storage time
    "terminal_on_life_loss": True,  # the paper's training setup; see the module doc
    "repeat_action_probability": 0.0,  # the paper predates sticky actions (v5 default 0.25)
    "network": "nature",
}
"""The Nature DQN hyperparameters (units in the comments), to build a config preset from."""


def clip_reward(reward: jax.Array) -> jax.Array:
    """``sign(reward)``: -1, 0 or 1, same shape, float32 (the Nature DQN reward clipping)."""
    return jnp.sign(jnp.asarray(reward, jnp.float32))


def _import_ale():
    try:
        import ale_py
    except ImportError as err:
        raise ImportError(
            f"Atari environments need ale-py (with its ROMs): {ATARI_INSTALL_HINT}"
        ) from err
    return ale_py


def is_atari_id(env_id: str) -> bool:
    """Whether ``env_id`` is a registered ale-py id (registers them first; ImportError with the
    install hint when ale-py is missing)."""
    import gymnasium as gym

    gym.register_envs(_import_ale())
    spec = gym.registry.get(env_id)
    return spec is not None and spec.entry_point == ALE_ENTRY_POINT


def make_atari_env(
    env_id: str,
    *,
    noop_max: int = 30,
    frame_skip: int = 4,
    terminal_on_life_loss: bool = False,
    stack: int = 4,
    **kwargs,
):
    """One preprocessed Atari environment: observations ``uint8[stack, 84, 84]``, raw rewards.

    Args:
      env_id: an ale-py id, e.g. ``"ALE/Pong-v5"`` (``ValueError`` otherwise).
      noop_max: at most this many no-op actions after each reset (0 disables).
      frame_skip: emulator frames per step; the observation is the max of the last two.
      terminal_on_life_loss: end the episode on a life loss (see the module doc).
      stack: frames per observation (``FrameStackObservation``, reset padding).
      **kwargs: passed to ``gym.make`` (e.g. ``repeat_action_probability``,
        ``full_action_space``, ``max_episode_steps``). ``frameskip`` is fixed to 1: the skipping
        happens in ``AtariPreprocessing``. ``repeat_action_probability`` defaults to the id's
        own (0.25 for ``-v5`` ids, 0 for ``NoFrameskip-v4``).

    Raises:
      ImportError: ale-py is not installed (the message says how to install it).
      ValueError: ``env_id`` is not an ale-py id, or ``frameskip`` was passed.
    """
    import gymnasium as gym
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    if not is_atari_id(env_id):
        raise ValueError(
            f"env={env_id!r} is not an Atari (ale-py) id; use e.g. 'ALE/Pong-v5' "
            "(ids registered by ale_py with entry point 'ale_py.env:AtariEnv')"
        )
    if "frameskip" in kwargs:
        raise ValueError("pass frame_skip=..., not frameskip: the base env must not skip frames")
    env = gym.make(env_id, frameskip=1, **kwargs)
    env = AtariPreprocessing(
        env,
        noop_max=noop_max,
        frame_skip=frame_skip,
        screen_size=84,
        terminal_on_life_loss=terminal_on_life_loss,
        grayscale_obs=True,
        grayscale_newaxis=False,
        scale_obs=False,
    )
    return FrameStackObservation(env, stack, padding_type="reset")
