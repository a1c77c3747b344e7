"""JAX environments (gymnax), stepped on the device: lookup by id, and a batched autoreset step.

``CartPole-v0`` is gymnax's CartPole with the 200-step time limit of Gymnasium's v0 (the
notebook's environment); every other id is gymnax's own.
"""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dqn_jax import rng
from dqn_jax.envs import ALIASES, EnvSpec, defer_plotting_imports, jax_env_ids, unknown_env_message

defer_plotting_imports()
from gymnax.environments import spaces  # noqa: E402 - after the deferral above


@cache
def make_env(env_id: str) -> tuple[Any, Any]:
    """``(env, env_params)`` for a JAX environment id; ``ValueError`` for unknown ids."""
    import gymnax

    if env_id not in jax_env_ids():
        raise ValueError(unknown_env_message(env_id))
    base_id, max_steps = ALIASES.get(env_id, (env_id, None))
    env, params = gymnax.make(base_id)
    if max_steps is not None:
        params = params.replace(max_steps_in_episode=max_steps)
    return env, params


@cache
def env_spec(env_id: str) -> EnvSpec:
    """Static facts of ``env_id``; ``ValueError`` if its action space is not discrete."""
    env, params = make_env(env_id)
    action_space = env.action_space(params)
    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(
            f"env={env_id!r} has a {type(action_space).__name__} action space; "
            "DQN needs a discrete one (spaces.Discrete)."
        )
    obs_shape = tuple(int(d) for d in env.observation_space(params).shape)
    return EnvSpec(env_id, obs_shape, int(action_space.n), int(params.max_steps_in_episode))


class EnvStep(NamedTuple):
    """Output of one batched step. ``next_obs`` is the observation to act on next (the reset
    observation where an episode ended); ``final_obs`` is the true observation after the action
    (differs from ``next_obs`` only where ``terminated | truncated``)."""

    next_obs: jax.Array
    env_state: Any
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array


def reset(env_id: str, key: jax.Array, num_envs: int) -> tuple[jax.Array, Any]:
    """Reset ``num_envs`` environments: ``(obs f32[num_envs, *obs_shape], env_state)``."""
    env, params = make_env(env_id)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), params)
    return obs.astype(jnp.float32), state


def step(env_id: str, key: jax.Array, env_state: Any, actions: jax.Array) -> EnvStep:
    """Step ``num_envs`` environments with autoreset; see :class:`EnvStep`.

    A time-limit truncation sets ``truncated`` and leaves ``terminated`` False, so the agent
    bootstraps from ``final_obs``. Where both hold, ``terminated`` wins (no bootstrap).
    """
    env, params = make_env(env_id)
    keys = rng.split(key, actions.shape[0])
    obs, state, reward, terminated, truncated, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
        keys, env_state, actions, params
    )
    return as_env_step(obs, state, reward, terminated, truncated, info["final_observation"])


def as_env_step(next_obs, state, reward, terminated, truncated, final_obs) -> EnvStep:
    """An :class:`EnvStep` from gymnax's outputs: observations and rewards as ``f32``, the ends
    as ``bool``, and ``terminated`` winning where both ends hold."""
    terminated = terminated.astype(bool)
    return EnvStep(
        next_obs.astype(jnp.float32),
        state,
        reward.astype(jnp.float32),
        terminated,
        truncated.astype(bool) & ~terminated,
        final_obs.astype(jnp.float32),
    )


def step_to_episode_end(env_id: str, key: jax.Array, env_state: Any, actions: jax.Array) -> EnvStep:
    """:func:`step` without the autoreset, for episodes that are not continued (evaluation).

    The same keys reach the environment's own step, so every transition up to and including an
    episode's end is :func:`step`'s (observations up to float rounding: XLA may fuse the two
    programs' arithmetic differently); after the end, ``next_obs`` and ``env_state`` carry on
    from the finished episode and mean nothing. Leaving out the reset (a random draw and a
    select over the whole state every step) makes a smaller program to compile.
    """
    env, params = make_env(env_id)

    def one(k, s, a):
        k_step = rng.split(k)[0]  # gymnax's step: (key_step, key_reset) = split(key)
        obs, s, reward, terminated, _ = env.step_env(k_step, s, a, params)
        return obs, s, reward, terminated, env.is_truncated(s, params)

    keys = rng.split(key, actions.shape[0])
    obs, state, reward, terminated, truncated = jax.vmap(one)(keys, env_state, actions)
    return as_env_step(obs, state, reward, terminated, truncated, obs)
