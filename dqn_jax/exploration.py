"""Exploration: epsilon schedules over env steps and epsilon-greedy action selection."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from dqn_jax import rng


def exponential_epsilon(step, eps_min: float, eps_max: float, decay: float) -> jax.Array:
    """The notebook's schedule: ``eps_min + (eps_max - eps_min) * exp(-decay * step)``.

    ``step`` counts env steps (transitions) since the start of learning-phase acting; ``decay``
    is per env step. Works on scalars or arrays (f32).
    """
    step = jnp.asarray(step, jnp.float32)
    return eps_min + (eps_max - eps_min) * jnp.exp(-decay * step)


def linear_epsilon(step, eps_start: float, eps_end: float, duration: float) -> jax.Array:
    """Linear from ``eps_start`` at step 0 to ``eps_end`` at ``duration`` env steps, then flat."""
    step = jnp.asarray(step, jnp.float32)
    frac = jnp.clip(step / jnp.maximum(duration, 1.0), 0.0, 1.0)
    return eps_start + frac * (eps_end - eps_start)


def epsilon_greedy(key: jax.Array, q_values: jax.Array, epsilon) -> jax.Array:
    """Actions ``i32[N]`` from ``q_values f32[N, A]``: uniform with prob. ``epsilon``, else argmax.

    Each row draws its own coin and its own random action from ``key``.
    """
    chex.assert_rank(q_values, 2)
    n, num_actions = q_values.shape
    k_coin, k_action = rng.split(key)
    explore = rng.uniform(k_coin, n) < epsilon
    random_actions = rng.randint(k_action, n, num_actions)
    return jnp.where(explore, random_actions, jnp.argmax(q_values, axis=-1)).astype(jnp.int32)
