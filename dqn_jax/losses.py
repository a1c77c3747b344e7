"""Elementwise losses on the TD error ``d = target - Q(s, a)`` (``f32[B] -> f32[B]``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def squared(td: jax.Array) -> jax.Array:
    """``d**2`` (the notebook's simple DQN; twice the usual 1/2 d**2)."""
    return jnp.square(td)


def half_squared(td: jax.Array) -> jax.Array:
    """``d**2 / 2`` (PQN's regression loss)."""
    return 0.5 * jnp.square(td)


def pseudo_huber(td: jax.Array) -> jax.Array:
    """``sqrt(1 + d**2) - 1``: the notebook's "error clipping"; gradient bounded by 1."""
    return jnp.sqrt(1.0 + jnp.square(td)) - 1.0


def huber(td: jax.Array, delta: float = 1.0) -> jax.Array:
    """``d**2 / 2`` for ``|d| <= delta``, ``delta * (|d| - delta / 2)`` beyond (Nature DQN)."""
    abs_td = jnp.abs(td)
    quadratic = jnp.minimum(abs_td, delta)
    return 0.5 * jnp.square(quadratic) + delta * (abs_td - quadratic)


LOSSES = {
    "squared": squared,
    "half_squared": half_squared,
    "pseudo_huber": pseudo_huber,
    "huber": huber,
}
