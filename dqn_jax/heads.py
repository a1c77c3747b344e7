"""Heads: what a network's output means, how it acts, and the loss that trains it.

A :class:`Head` is the swap point between the value-based families. Its loss is handed the
network (``forward(params, obs, key=None, **kwargs) -> output``), the online and target
parameters, a replay batch and a key, and runs the network itself: each head decides which
outputs it needs (Munchausen also reads the target net at ``obs``; IQN draws fractions per
call). Acting and evaluation read ``head.q_values`` of the output for ``head.act_kwargs``.
Scalar Q-learning (:func:`scalar_head`) and Munchausen DQN (:func:`munchausen_head`) are
here; the categorical (C51) and quantile (QR-DQN, IQN) heads are in
:mod:`dqn_jax.distributional`.

Keys: ``key=None`` asks a network for its deterministic output (noisy layers at their mean
weights, IQN at evenly spaced fractions): what evaluation uses. A head splits its key into one
key per network call, so the online and target passes draw independent noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from dqn_jax.replay import Transition

Forward = Callable[..., Any]  # (params, obs [B, ...], key=None, **kwargs) -> output [B, ...]


class LossTerms(NamedTuple):
    """Per-sample outputs of a head's loss (``B`` = batch size)."""

    loss: jax.Array  # f32[B], to be weighted (importance sampling) and averaged
    priority: jax.Array  # f32[B] >= 0, written back to a prioritized replay (|td| for TD heads)
    q_sa: jax.Array  # f32[B], Q(s, a) of the taken actions (reported)


class Head(NamedTuple):
    """``q_values(out) -> f32[B, A]`` of a network output ``out``, and
    ``loss(forward, params, target_params, batch, key) -> LossTerms``. ``act_kwargs``: keyword
    arguments of ``forward`` when acting or evaluating. The caller stops no gradient: a head
    stops them through its own target."""

    q_values: Callable[[Any], jax.Array]
    loss: Callable[[Forward, Any, Any, Transition, jax.Array], LossTerms]
    act_kwargs: dict = {}


def network_outputs(forward: Forward, params, target_params, batch: Transition, key, **kwargs):
    """``(out(obs), out_online(next_obs), out_target(next_obs))``, each network call with its
    own key (the online parameters for the first two)."""
    k_obs, k_next, k_target = jax.random.split(key, 3)
    return (
        forward(params, batch.obs, k_obs, **kwargs),
        forward(params, batch.next_obs, k_next, **kwargs),
        forward(target_params, batch.next_obs, k_target, **kwargs),
    )


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

    def loss(forward, params, target_params, batch: Transition, key) -> LossTerms:
        q, q_next_online, q_next_target = network_outputs(
            forward, params, target_params, batch, key
        )
        td = td_error(q, q_next_online, q_next_target, batch, target_fn)
        return LossTerms(loss_fn(td), jnp.abs(td), take_actions(q, batch.action))

    return Head(q_values=lambda q: q, loss=loss)


def munchausen_target(
    q_target, q_next_target, action, reward, discount, temperature, alpha, clip_min
) -> jax.Array:
    """Munchausen DQN's target ``f32[B]`` (Vieillard et al. 2020, eq. 2) from the target net's
    Q-values ``f32[B, A]`` at ``s`` and ``s'``: with ``pi = softmax(q / temperature)``,
    ``r + alpha * clip(temperature * log pi(a|s), clip_min, 0)
    + discount * sum_a' pi(a'|s') (q(s', a') - temperature * log pi(a'|s'))``."""
    chex.assert_rank([q_target, q_next_target, action, reward, discount], [2, 2, 1, 1, 1])
    chex.assert_equal_shape([q_target, q_next_target])
    log_pi = jax.nn.log_softmax(q_target / temperature, axis=-1)
    bonus = jnp.clip(temperature * take_actions(log_pi, action), clip_min, 0.0)
    log_pi_next = jax.nn.log_softmax(q_next_target / temperature, axis=-1)
    soft_value = jnp.sum(
        jnp.exp(log_pi_next) * (q_next_target - temperature * log_pi_next), axis=-1
    )
    return reward + alpha * bonus + discount * soft_value


def munchausen_head(loss_fn: Callable, temperature: float, alpha: float, clip_min: float) -> Head:
    """Munchausen DQN: scalar Q-values trained towards :func:`munchausen_target` (the target
    net read at ``obs`` and ``next_obs``) under ``loss_fn``; priority ``|td|``."""

    def loss(forward, params, target_params, batch: Transition, key) -> LossTerms:
        k_obs, k_target, k_next = jax.random.split(key, 3)
        q = forward(params, batch.obs, k_obs)
        q_target = forward(target_params, batch.obs, k_target)
        q_next_target = forward(target_params, batch.next_obs, k_next)
        target = munchausen_target(
            q_target,
            q_next_target,
            batch.action,
            batch.reward,
            batch.discount,
            temperature,
            alpha,
            clip_min,
        )
        td = jax.lax.stop_gradient(target) - take_actions(q, batch.action)
        return LossTerms(loss_fn(td), jnp.abs(td), take_actions(q, batch.action))

    return Head(q_values=lambda q: q, loss=loss)
