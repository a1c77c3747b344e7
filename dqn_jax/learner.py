"""The whole update: a replay sample, the head's loss, one gradient step, the target update.

The variant-specific pieces are passed in (a :class:`~dqn_jax.heads.Head`, an optimizer, a
:class:`~dqn_jax.replay.Replay`), so simple DQN, DQN, Double DQN, PER and the distributional
heads all run through :func:`make_update` unchanged. Targets read ``batch.discount``
(``gamma**k * (1 - terminated)``, set when the transition was stored), so the update never
needs ``gamma`` or the number of steps a transition spans.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from dqn_jax.heads import Head, LossTerms
from dqn_jax.replay import Replay, Transition


class Learner(NamedTuple):
    """Everything the update changes besides the replay."""

    params: Any
    target_params: Any
    opt_state: Any


class UpdateMetrics(NamedTuple):
    loss: jax.Array  # f32[], weighted mean loss of the batch
    q_mean: jax.Array  # f32[], mean Q(s, a) of the batch


def loss_terms(apply_fn: Callable, head: Head, params, target_params, batch: Transition, key):
    """The head's :class:`~dqn_jax.heads.LossTerms` for ``batch`` (``[B]`` each); ``key``
    feeds the network's noise or sampled fractions (unused by deterministic networks)."""
    return head.loss(apply_fn, params, target_params, batch, key)


LOSS_STREAM = 0x1055
"""The loss's key is ``fold_in(update key, LOSS_STREAM)``; the replay samples with the update key
itself, so heads that draw nothing leave the sampling stream as it was."""


def make_update(
    apply_fn: Callable, optimizer: optax.GradientTransformation, replay: Replay, head: Head
) -> Callable:
    """``update(learner, replay_state, key, beta, lr) -> (learner, replay_state, metrics)``.

    One gradient step on a replay sample: loss = mean over the batch of
    ``is_weight * head_loss``; ``params <- params - lr * direction`` where ``optimizer`` gives
    the direction (see :func:`make_optimizer`); the sampled items' priorities get the head's
    ``priority`` (``|td|``; a no-op for uniform replay). ``beta`` and ``lr`` may be traced.
    """

    def loss_of(params, target_params, batch, weights, key):
        terms: LossTerms = loss_terms(apply_fn, head, params, target_params, batch, key)
        return jnp.mean(weights * terms.loss), terms

    def update(learner: Learner, replay_state, key, beta, lr):
        indices, batch, weights = replay.sample(replay_state, key, beta)
        k_loss = jax.random.fold_in(key, LOSS_STREAM)
        grads, terms = jax.grad(loss_of, has_aux=True)(
            learner.params, learner.target_params, batch, weights, k_loss
        )
        replay_state = replay.update(replay_state, indices, terms.priority)
        metrics = UpdateMetrics(jnp.mean(weights * terms.loss), jnp.mean(terms.q_sa))
        return apply_direction(optimizer, learner, grads, lr), replay_state, metrics

    return update


def apply_direction(optimizer: optax.GradientTransformation, learner: Learner, grads, lr):
    """``learner`` after one step: ``params <- params - lr * direction`` with the optimizer's
    direction for ``grads`` (see :func:`make_optimizer`); the target parameters are kept."""
    direction, opt_state = optimizer.update(grads, learner.opt_state, learner.params)
    params = jax.tree.map(lambda p, d: p - lr * d, learner.params, direction)
    return Learner(params, learner.target_params, opt_state)


def update_target(learner: Learner, tau) -> Learner:
    """``target <- tau * online + (1 - tau) * target``; a Python ``tau == 1`` copies exactly."""
    if isinstance(tau, float | int) and tau == 1.0:
        target = learner.params
    else:
        target = optax.incremental_update(learner.params, learner.target_params, tau)
    return learner._replace(target_params=target)


def make_optimizer(
    name: str, max_grad_norm: float, adam_eps: float = 1e-8
) -> optax.GradientTransformation:
    """The update *direction* of Adam, of RAdam (PQN's), of TF1-style RMSProp (the notebook's)
    or of Nature DQN's centered RMSProp, optionally after global-norm clipping. The caller
    multiplies it by the (possibly annealed, possibly traced) learning rate, so
    ``p - lr * direction`` is exactly that optimizer with that rate. ``adam_eps``: Adam's (and
    RAdam's) epsilon, outside the square root."""
    if name == "adam":
        opt = optax.scale_by_adam(eps=adam_eps)
    elif name == "rmsprop":
        # TF1's RMSPropOptimizer: decay 0.9, epsilon 1e-10 inside the sqrt, accumulator at 1.
        opt = optax.scale_by_rms(decay=0.9, eps=1e-10, initial_scale=1.0)
    elif name == "radam":
        opt = optax.scale_by_radam(eps=adam_eps)
    elif name == "rmsprop_centered":
        # Nature DQN's RMSProp: E[g] and E[g^2] with decay 0.95, 0.01 inside the sqrt.
        opt = optax.scale_by_stddev(decay=0.95, eps=0.01, eps_in_sqrt=True)
    else:
        raise ValueError(
            f"optimizer={name!r} is unknown: must be adam, radam, rmsprop or rmsprop_centered"
        )
    if max_grad_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(max_grad_norm), opt)
    # One flat vector instead of one small array per layer: XLA then compiles the same
    # elementwise update whatever the device count, so sharded runs stay bit-identical
    # (per-leaf updates were measured to round differently in multi-device programs).
    return optax.flatten(opt)


def annealed_lr(lr, update_index, num_updates: int, anneal: bool):
    """``lr`` decayed linearly to 0 over ``num_updates`` updates if ``anneal``, else ``lr``."""
    if not anneal:
        return lr
    frac = jnp.minimum(update_index / max(num_updates, 1), 1.0)
    return lr * (1.0 - frac)
