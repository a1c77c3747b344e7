"""Exploration: epsilon schedules over env steps, and epsilon-greedy acting from a plan drawn
ahead for a whole iteration (what both drivers act with)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


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


def exploration_plan(uniforms: jax.Array, epsilon: jax.Array, num_actions: int) -> jax.Array:
    """Which env explores at which step of an iteration, decided ahead: ``i32[V, N]`` holding
    the random action where ``uniforms[v, 0, e] < epsilon[v]`` and -1 (act greedily) elsewhere.

    ``uniforms f32[V, 2, N]`` in [0, 1) (a coin and an action draw per step and env),
    ``epsilon f32[V]``. With :func:`act_from_plan` this is epsilon-greedy; the host driver
    skips the device entirely on a step whose envs all explore.
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
