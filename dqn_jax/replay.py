"""Replay buffers as records of pure functions over array state.

Every buffer is a :class:`Replay`: four pure, jittable, vmappable functions over an explicit
pytree state. The uniform buffer lives here; the prioritized one (same four functions) lives in
:mod:`dqn_jax.per`, so a variant swaps one for the other without touching the loop.

Contract shared by every buffer (``B`` = batch size, ``n`` = transitions added at once):

- ``init(example) -> state``: ``example`` is one unbatched :class:`Transition`; the buffer
  allocates ``capacity`` slots of that shape and dtype.
- ``add(state, transitions, abs_td) -> state``: ``transitions`` has leading dim ``n``
  (``n <= capacity``), written circularly after the last write. ``abs_td`` is ``f32[n]`` or
  ``None``; buffers that do not use priorities ignore it.
- ``sample(state, key, beta) -> (indices i32[B], batch Transition[B], weights f32[B])``: only
  filled slots are returned. ``weights`` are importance-sampling weights (all ones for uniform);
  ``beta`` is the IS exponent, ignored by uniform replay.
- ``update(state, indices, abs_td) -> state``: new priorities from ``|td|`` ``f32[B]`` for the
  sampled ``indices`` (a no-op for uniform replay).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

from dqn_jax import rng


class Transition(NamedTuple):
    """One transition (or a batch of them, with a shared leading dim), carrying its own return.

    ``reward`` is the (discounted) reward sum from ``obs`` to ``next_obs`` and ``discount`` the
    factor the bootstrap ``Q(next_obs)`` gets: ``gamma**k * (1 - terminated)`` after ``k`` env
    steps (``k = 1`` unless a write-side accumulator such as n-step returns made it longer), so
    a target never needs to know ``k`` or ``gamma``. ``next_obs`` is the real observation after
    the last step; for a time-limit truncation it is the episode's final observation, never the
    reset observation, and ``discount`` stays ``gamma**k`` (it bootstraps). ``last`` is 1.0
    where the episode ended at that step (terminated or truncated): accumulators stop there.
    """

    obs: jax.Array  # [..., *obs_shape]
    action: jax.Array  # i32[...]
    reward: jax.Array  # f32[...]
    discount: jax.Array  # f32[...], 0.0 = terminal
    next_obs: jax.Array  # [..., *obs_shape]
    last: jax.Array  # f32[...], 1.0 = the episode ended here


def example_transition(obs: jax.Array) -> Transition:
    """An unbatched :class:`Transition` with observations like ``obs`` (for ``Replay.init``)."""
    zero = jnp.float32(0)
    return Transition(obs, jnp.int32(0), zero, zero, obs, zero)


class Replay(NamedTuple):
    """A replay buffer: four pure functions over an explicit pytree state (see module doc).

    ``needs_priority``: ``add`` reads ``abs_td`` (a prioritized buffer that gives new
    transitions their own TD priority); the agent then computes it for every stored batch.
    ``n_step``: the buffer itself builds ``n_step``-step transitions from the one-step ones it
    stores, when sampling (the frame replay); the agent then stores one-step transitions.
    Otherwise (1) the agent's write-side accumulator (:func:`dqn_jax.returns.n_step`) does."""

    init: Callable[[Transition], Any]
    add: Callable[[Any, Transition, jax.Array | None], Any]
    sample: Callable[[Any, jax.Array, jax.Array | float], tuple[jax.Array, Transition, jax.Array]]
    update: Callable[[Any, jax.Array, jax.Array], Any]
    needs_priority: bool = False
    n_step: int = 1


class UniformState(NamedTuple):
    """Circular buffer state: ``data`` leaves are ``[capacity, ...]``."""

    data: Transition
    ptr: jax.Array  # i32[], next slot to write
    size: jax.Array  # i32[], number of filled slots (<= capacity)


def allocate(example: Transition, capacity: int) -> Transition:
    """Zero-filled storage: each leaf of ``example`` gets a leading ``capacity`` dim."""
    return jax.tree.map(
        lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.asarray(x).dtype), example
    )


def write_slots(ptr: jax.Array, n: int, capacity: int) -> jax.Array:
    """Slots ``i32[n]`` that ``n`` consecutive writes starting at ``ptr`` land in (wrapping)."""
    return (ptr + jnp.arange(n, dtype=jnp.int32)) % capacity


def write(data: Transition, slots: jax.Array, transitions: Transition) -> Transition:
    """Scatter ``transitions`` (leading dim n) into ``data`` at ``slots`` (distinct)."""
    return jax.tree.map(lambda buf, x: buf.at[slots].set(x.astype(buf.dtype)), data, transitions)


def gather(data: Transition, indices: jax.Array) -> Transition:
    """The transitions stored at ``indices`` (``i32[B]``), each leaf ``[B, ...]``."""
    return jax.tree.map(lambda buf: buf[indices], data)


def uniform_replay(capacity: int, batch_size: int) -> Replay:
    """Uniform circular replay of ``capacity`` transitions, sampling ``batch_size`` at a time.

    Sampling draws indices i.i.d. uniformly among the filled slots (with replacement). Sampling
    an empty buffer returns slot 0 (zeros); the training loop never learns before
    ``learning_starts`` transitions, which the config keeps ``>= batch_size``.
    """
    if capacity < 1 or batch_size < 1:
        raise ValueError(f"capacity and batch_size must be >= 1, got {capacity}, {batch_size}")

    def init(example: Transition) -> UniformState:
        return UniformState(allocate(example, capacity), jnp.int32(0), jnp.int32(0))

    def add(state: UniformState, transitions: Transition, abs_td=None) -> UniformState:
        del abs_td
        n = transitions.action.shape[0]
        chex.assert_tree_shape_prefix(transitions, (n,))
        if n > capacity:
            raise ValueError(f"cannot add {n} transitions at once to a buffer of {capacity}")
        slots = write_slots(state.ptr, n, capacity)
        return UniformState(
            data=write(state.data, slots, transitions),
            ptr=(state.ptr + n) % capacity,
            size=jnp.minimum(state.size + n, capacity),
        )

    def sample(state: UniformState, key: jax.Array, beta=None):
        del beta
        indices = rng.randint(key, batch_size, jnp.maximum(state.size, 1))
        return indices, gather(state.data, indices), jnp.ones((batch_size,), jnp.float32)

    def update(state: UniformState, indices: jax.Array, abs_td: jax.Array) -> UniformState:
        del indices, abs_td
        return state

    return Replay(init, add, sample, update)
