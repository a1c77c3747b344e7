"""Bootstrap targets: the swap point between DQN variants.

Every target function has the same signature (batched, rlax style)::

    target_fn(q_next_online f32[B, A], q_next_target f32[B, A], reward f32[B], discount f32[B])
        -> f32[B]

``discount`` is ``gamma`` times ``(1 - terminated)``: zero for a true terminal state, ``gamma``
otherwise (a time-limit truncation bootstraps). The caller stops gradients through the target.
A new variant is a new function with this signature.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def _check(q_next_online, q_next_target, reward, discount) -> None:
    chex.assert_rank([q_next_online, q_next_target, reward, discount], [2, 2, 1, 1])
    chex.assert_equal_shape([q_next_online, q_next_target])
    chex.assert_equal_shape([reward, discount])
    chex.assert_equal_shape_prefix([q_next_online, reward], 1)


def q_learning_online(q_next_online, q_next_target, reward, discount) -> jax.Array:
    """Simple DQN: ``r + discount * max_a Q_online(s', a)`` (no target network)."""
    _check(q_next_online, q_next_target, reward, discount)
    return reward + discount * jnp.max(q_next_online, axis=-1)


def q_learning(q_next_online, q_next_target, reward, discount) -> jax.Array:
    """DQN: ``r + discount * max_a Q_target(s', a)``."""
    _check(q_next_online, q_next_target, reward, discount)
    return reward + discount * jnp.max(q_next_target, axis=-1)


def double_q_learning(q_next_online, q_next_target, reward, discount) -> jax.Array:
    """Double DQN: ``r + discount * Q_target(s', argmax_a Q_online(s', a))``."""
    _check(q_next_online, q_next_target, reward, discount)
    best = jnp.argmax(q_next_online, axis=-1)
    return reward + discount * jnp.take_along_axis(q_next_target, best[:, None], axis=-1)[:, 0]


TARGETS = {
    "q_learning_online": q_learning_online,
    "q_learning": q_learning,
    "double_q_learning": double_q_learning,
}
