"""Heads: what a network's output means, how it acts, and the loss that trains it.

A :class:`Head` is the swap point between the value-based families. The learner runs the
network on ``obs`` (online parameters) and on ``next_obs`` (online and target parameters) and
hands the three outputs, whatever their shape, to ``head.loss``; acting and evaluation read
``head.q_values``. Scalar Q-learning (:func:`scalar_head`) is one head; a categorical head
(C51: logits over fixed atoms, projected target, cross-entropy) or a quantile head (QR-DQN,
IQN: quantile Huber loss) is another pair of functions with the same signatures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from dqn_jax.replay import Transition


class LossTerms(NamedTuple):
    """Per-sample outputs of a head's loss (``B`` = batch size)."""

    loss: jax.Array  # f32[B], to be weighted (importance sampling) and averaged
    priority: jax.Array  # f32[B] >= 0, written back to a prioritized replay (|td| for TD heads)
    q_sa: jax.Array  # f32[B], Q(s, a) of the taken actions (reported)


class Head(NamedTuple):
    """``q_values(out) -> f32[B, A]`` and ``loss(out, out_next_online, out_next_target, batch)
    -> LossTerms``, where each ``out`` is the network's output ``[B, ...]`` for ``batch.obs``
    (online) and ``batch.next_obs`` (online, target). The caller stops no gradient: a head
    stops them through its own target."""

    q_values: Callable[[jax.Array], jax.Array]
    loss: Callable[[jax.Array, jax.Array, jax.Array, Transition], LossTerms]


def take_actions(values: jax.Array, actions: jax.Array) -> jax.Array:
    """``values[b, actions[b]]`` for ``values f32[B, A, ...]`` and ``actions i32[B]``."""
    chex.assert_rank(actions, 1)
    index = actions.reshape(actions.shape + (1,) * (values.ndim - 1))
    return jnp.take_along_axis(values, index, axis=1)[:, 0]


def td_error(q, q_next_online, q_next_target, batch: Transition, target_fn) -> jax.Array:
    """``td f32[B] = stop_grad(target_fn(q_next_online, q_next_target, r, discount)) - Q(s, a)``
    for Q-values ``f32[B, A]``."""
    chex.assert_shape([batch.action, batch.reward, batch.discount], (q.shape[0],))
    target = target_fn(q_next_online, q_next_target, batch.reward, batch.discount)
    return jax.lax.stop_gradient(target) - take_actions(q, batch.action)


def scalar_head(target_fn: Callable, loss_fn: Callable) -> Head:
    """Scalar Q-values (``out`` is ``f32[B, A]``): the TD error of ``target_fn`` (see
    :mod:`dqn_jax.targets`) under the elementwise ``loss_fn`` (see :mod:`dqn_jax.losses`);
    priority ``|td|``. Outputs a target does not read (the target net in simple DQN) are
    removed by XLA, so every variant pays only for what it uses."""

    def loss(q, q_next_online, q_next_target, batch: Transition) -> LossTerms:
        td = td_error(q, q_next_online, q_next_target, batch, target_fn)
        return LossTerms(loss_fn(td), jnp.abs(td), take_actions(q, batch.action))

    return Head(q_values=lambda q: q, loss=loss)
