"""PQN (Gallici et al. 2024): Q(lambda) targets over a rollout, then epochs of minibatch
regression to them; no replay buffer and no target network.

The agent core (:mod:`dqn_jax.agent`) calls :func:`make_rollout_update` at the end of each
iteration with that iteration's ``V x N`` transitions (time-major). The targets are computed once
per rollout with the parameters that acted (the paper's stored Q-values; ``lambda_recompute``
recomputes them before every epoch with the current parameters instead).

Where purejaxql (the paper's code) differs: it treats every episode end as terminal and reads the
bootstrap of step ``t`` from the observation after an autoreset. Here a termination stops
bootstrapping (``discount`` 0), a time-limit truncation bootstraps from the true final
observation (``next_obs``), and no return crosses an episode end (``last``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from dqn_jax.heads import take_actions
from dqn_jax.learner import Learner, annealed_lr, apply_direction
from dqn_jax.replay import Transition


def q_lambda_returns(
    reward: jax.Array, discount: jax.Array, q_next: jax.Array, last: jax.Array, lam
) -> jax.Array:
    """Q(lambda) returns ``f32[V, ...]`` of a time-major rollout, by a reverse scan.

    ``reward f32[V, ...]``, ``discount f32[V, ...]`` (``gamma * (1 - terminated)``),
    ``q_next f32[V, ...]`` (``max_a Q(next_obs_t, a)``, from the true final observation where an
    episode ended), ``last f32[V, ...]`` (1 where the episode ended at ``t``: terminated or
    truncated) and ``lam`` in [0, 1]:
    ``G_t = r_t + discount_t * ((1 - l_t) * q_next_t + l_t * G_{t+1})`` with
    ``l_t = lam * (1 - last_t)`` and ``l_{V-1} = 0`` (the rollout's last step bootstraps fully).
    Equals ``rlax.lambda_returns(r, discount, q_next, l)`` for each trailing index.
    """
    chex.assert_equal_shape([reward, discount, q_next, last])
    mix = lam * (1.0 - jnp.asarray(last))
    mix = mix.at[-1].set(0.0)

    def back(g_next, xs):
        r, d, q, m = xs
        g = r + d * ((1.0 - m) * q + m * g_next)
        return g, g

    _, returns = jax.lax.scan(
        back, jnp.zeros_like(reward[0]), (reward, discount, q_next, mix), reverse=True
    )
    return returns


def rollout_targets(q_fn: Callable, params, rollout: Transition, lam) -> jax.Array:
    """The Q(lambda) targets ``f32[V, N]`` of a rollout :class:`~dqn_jax.replay.Transition`
    ``[V, N, ...]`` under ``params`` (gradients stopped): :func:`q_lambda_returns` with
    ``q_next = max_a q_fn(params, next_obs)``, ``next_obs`` being each step's true next
    observation (an ended episode's final one)."""
    v, n = rollout.reward.shape
    obs = rollout.next_obs.reshape(v * n, *rollout.next_obs.shape[2:])
    q_next = jnp.max(q_fn(params, obs), axis=-1).reshape(v, n)
    returns = q_lambda_returns(rollout.reward, rollout.discount, q_next, rollout.last, lam)
    return jax.lax.stop_gradient(returns)


class RolloutMetrics(NamedTuple):
    loss: jax.Array  # f32[E * M], mean loss of each minibatch update
    q_mean: jax.Array  # f32[E * M], mean Q(s, a) of each minibatch


def make_rollout_update(
    q_fn: Callable,
    loss_fn: Callable,
    optimizer,
    *,
    num_epochs: int,
    num_minibatches: int,
    recompute: bool,
    total_updates: int,
    anneal: bool,
) -> Callable:
    """``update(learner, rollout, key, lam, lr, first_index) -> (learner, RolloutMetrics)``.

    ``q_fn(params, obs [B, ...]) -> f32[B, A]``; ``loss_fn`` elementwise on ``G - Q(s, a)``
    (:mod:`dqn_jax.losses`); ``rollout``: a :class:`~dqn_jax.replay.Transition` ``[V, N, ...]``.
    ``num_epochs`` passes, each over a fresh permutation of the ``V * N`` transitions cut into
    ``num_minibatches`` minibatches, one gradient step each (``p <- p - lr_k * direction``, the
    rate annealed over ``total_updates`` when ``anneal``; ``first_index`` is the run-wide index
    of this rollout's first step). The target parameters are not read or changed.
    """

    def minibatch_loss(params, obs, action, target):
        q_sa = take_actions(q_fn(params, obs), action)
        return jnp.mean(loss_fn(target - q_sa)), q_sa

    def update(learner: Learner, rollout: Transition, key, lam, lr, first_index):
        rollout = jax.tree.map(jnp.asarray, rollout)
        chex.assert_rank(rollout.reward, 2)
        size = rollout.reward.size
        flat = lambda x: x.reshape(size, *x.shape[2:])  # noqa: E731 - [V, N, ...] -> [V*N, ...]
        obs, action = flat(rollout.obs), flat(rollout.action)
        fixed = None if recompute else flat(rollout_targets(q_fn, learner.params, rollout, lam))

        def epoch(learner, xs):
            k, index = xs
            target = (
                flat(rollout_targets(q_fn, learner.params, rollout, lam)) if recompute else fixed
            )
            order = jax.random.permutation(k, size).reshape(num_minibatches, -1)

            def step(learner, xs):
                rows, i = xs
                (loss, q_sa), grads = jax.value_and_grad(minibatch_loss, has_aux=True)(
                    learner.params, obs[rows], action[rows], target[rows]
                )
                rate = annealed_lr(lr, index + i, total_updates, anneal)
                learner = apply_direction(optimizer, learner, grads, rate)
                return learner, (loss, jnp.mean(q_sa))

            return jax.lax.scan(step, learner, (order, jnp.arange(num_minibatches)))

        keys = jax.random.split(key, num_epochs)
        starts = first_index + num_minibatches * jnp.arange(num_epochs)
        learner, (loss, q_mean) = jax.lax.scan(epoch, learner, (keys, starts))
        return learner, RolloutMetrics(loss.reshape(-1), q_mean.reshape(-1))

    return update
