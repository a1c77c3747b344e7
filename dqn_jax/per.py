"""Prioritized experience replay (Schaul et al., 2016) over a :mod:`dqn_jax.sumtree`.

Same :class:`~dqn_jax.replay.Replay` record as :func:`~dqn_jax.replay.uniform_replay`, so a
variant swaps one buffer for the other without touching the training loop.

A transition's priority is ``p = (|td| + eps) ** alpha``; it is sampled with probability
``P(i) = p_i / sum_j p_j`` and its loss is weighted by ``w_i = (N * P(i)) ** -beta``, normalized by
the largest weight in the batch (``N`` = filled slots).
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from dqn_jax import sumtree
from dqn_jax.replay import Replay, Transition, allocate, gather, write, write_slots

INSERT_RULES = ("max", "td")


class PrioritizedState(NamedTuple):
    """Circular buffer state plus a sum tree over the slots' priorities."""

    data: Transition  # leaves [capacity, ...]
    ptr: jax.Array  # i32[], next slot to write
    size: jax.Array  # i32[], number of filled slots (<= capacity)
    tree: sumtree.SumTree  # leaf i = priority of slot i, 0 for empty slots
    max_priority: jax.Array  # f32[], largest priority computed so far (1.0 before any)


def priority(abs_td: jax.Array, alpha: float, eps: float) -> jax.Array:
    """``(|td| + eps) ** alpha``, same shape as ``abs_td``, float32."""
    return (jnp.abs(abs_td).astype(jnp.float32) + eps) ** alpha


def importance_weights(sampled_priorities: jax.Array, beta: jax.Array | float) -> jax.Array:
    """IS weights ``f32[B]`` for a batch drawn with probability proportional to its priorities.

    ``w_i = (N * p_i / total) ** -beta / max_j (N * p_j / total) ** -beta`` reduces exactly to
    ``(min_j p_j / p_i) ** beta``: ``N`` and ``total`` cancel, and the ratio form cannot
    overflow for extreme priorities. ``sampled_priorities`` is ``f32[B]``, positive; ``beta``
    is a scalar in ``[0, 1]`` (may be traced). Non-positive priorities (only possible when the
    buffer is empty) get weight 1.
    """
    chex.assert_rank(sampled_priorities, 1)
    positive = sampled_priorities > 0
    p = jnp.where(positive, sampled_priorities, 1.0)
    p_min = jnp.min(jnp.where(positive, p, jnp.inf))
    return jnp.where(positive, (p_min / p) ** beta, 1.0)


def _check_args(capacity, batch_size, alpha, eps, priority_on_insert) -> None:
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if priority_on_insert not in INSERT_RULES:
        raise ValueError(
            f"priority_on_insert must be one of {INSERT_RULES}, got {priority_on_insert!r}"
        )


def prioritized_replay(
    capacity: int,
    batch_size: int,
    alpha: float = 0.6,
    eps: float = 0.01,
    priority_on_insert: str = "max",
) -> Replay:
    """Prioritized circular replay of ``capacity`` transitions, ``batch_size`` per sample.

    Args:
      capacity: number of slots, ``>= 1``.
      batch_size: transitions per sample, ``>= 1``.
      alpha: priority exponent, ``>= 0`` (0 = uniform over filled slots).
      eps: added to ``|td|`` so no stored transition has zero priority, ``> 0``.
      priority_on_insert: ``"max"`` gives new transitions the largest priority computed so far
        (the PER paper; ``abs_td`` is ignored); ``"td"`` gives them ``(|abs_td| + eps) ** alpha``
        from their own TD error at insertion (the notebook; ``abs_td`` required).

    Functions (``B = batch_size``, ``n`` = transitions added at once):

    - ``add(state, transitions[n], abs_td f32[n] | None)``: circular write; overwritten slots
      get the new priority. The running max includes inserted priorities.
    - ``sample(state, key, beta) -> (i32[B], Transition[B], f32[B])``: one value per stratum
      of ``[0, total)``; never an empty slot once one is filled (an empty buffer gives slot 0,
      weight 1); weights from :func:`importance_weights`.
    - ``update(state, indices i32[B], abs_td f32[B])``: new priorities for the sampled slots;
      duplicate indices: the last occurrence wins (as :func:`dqn_jax.sumtree.update`); indices
      of empty slots are ignored. The running max includes every new priority of the batch
      (overwritten duplicates included).
    """
    _check_args(capacity, batch_size, alpha, eps, priority_on_insert)

    def init(example: Transition) -> PrioritizedState:
        return PrioritizedState(
            data=allocate(example, capacity),
            ptr=jnp.int32(0),
            size=jnp.int32(0),
            tree=sumtree.init(capacity),
            max_priority=jnp.float32(1.0),
        )

    def add(state: PrioritizedState, transitions: Transition, abs_td=None) -> PrioritizedState:
        n = transitions.action.shape[0]
        chex.assert_tree_shape_prefix(transitions, (n,))
        if n > capacity:
            raise ValueError(f"cannot add {n} transitions at once to a buffer of {capacity}")
        if priority_on_insert == "td":
            if abs_td is None:
                raise ValueError('priority_on_insert="td" needs abs_td (f32[n]), got None')
            chex.assert_shape(abs_td, (n,))
            new = priority(abs_td, alpha, eps)
        else:
            new = jnp.full((n,), state.max_priority, jnp.float32)
        slots = write_slots(state.ptr, n, capacity)
        return PrioritizedState(
            data=write(state.data, slots, transitions),
            ptr=(state.ptr + n) % capacity,
            size=jnp.minimum(state.size + n, capacity),
            tree=sumtree.update(state.tree, slots, new),
            max_priority=jnp.maximum(state.max_priority, jnp.max(new)),
        )

    def sample(state: PrioritizedState, key: jax.Array, beta=1.0):
        values = sumtree.stratified_values(key, batch_size, sumtree.total(state.tree))
        indices = sumtree.sample(state.tree, values)
        sampled = sumtree.priorities(state.tree)[indices]
        # `update` overwrites the leaves in place. Making the returned indices depend on this
        # read (the test is always true) orders it before that write; otherwise XLA may
        # schedule it later and must copy every leaf to keep the old values alive.
        indices = jnp.where(sampled >= 0, indices, 0)
        weights = importance_weights(sampled, beta)
        return indices, gather(state.data, indices), weights

    def update(state: PrioritizedState, indices: jax.Array, abs_td: jax.Array):
        chex.assert_rank([indices, abs_td], 1)
        chex.assert_equal_shape([indices, abs_td])
        new = priority(abs_td, alpha, eps)
        # The tree drops out-of-range indices (negative ones too): empty slots stay at priority
        # 0, unsampleable.
        filled = indices < state.size
        return state._replace(
            tree=sumtree.update(state.tree, jnp.where(filled, indices, capacity), new),
            max_priority=jnp.maximum(state.max_priority, jnp.max(jnp.where(filled, new, 0.0))),
        )

    return Replay(init, add, sample, update, needs_priority=priority_on_insert == "td")
