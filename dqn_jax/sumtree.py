"""A sum tree over a fixed number of non-negative priorities, as plain arrays.

The tree has fanout ``F`` (default 4; ``F = 2`` is the textbook binary sum tree) and depth
``D = max(1, ceil(log_F(capacity)))``: the root is at depth 0, the leaves at depth ``D``, and
node ``n`` at depth ``k`` has children ``n*F .. n*F + F-1`` at depth ``k+1``. A batch update or
sample is ``D`` static levels of gathers/scatters of size ``B`` (each reading ``F`` contiguous
floats). On CPU the fixed cost per XLA operation dominates the arithmetic, and ``F = 4`` halves
the number of levels of a binary tree: it measured fastest (``benchmarks/replay.py``).

Storage (all float32):

- ``leaves f32[capacity]``: the priorities. Leaves ``capacity .. F**D - 1`` are padding: not
  stored, read as 0, never sampled.
- ``levels[k] f32[rows_k, F]`` for ``k = 0 .. D-1``: the masses of the nodes at depth ``k``,
  flattened row-major (node ``n`` is ``levels[k].reshape(-1)[n]``, so row ``r`` of
  ``levels[k+1]`` holds the children of node ``r``), zero-padded to whole rows.
  ``levels[0][0, 0]`` is the root (the total); the rest of that row stays 0.

The capacity, fanout and depth are static because they are shapes (``leaves.shape[-1]``,
``levels[0].shape[-1]``, ``len(levels)``): a :class:`SumTree` is a pytree of arrays only, and
every function here is pure, jittable and vmappable over a leading axis of trees.

Internal nodes are always recomputed from their children, summed left to right in float32
(never updated by adding deltas), so the total cannot drift however many updates it has seen,
and a node's stored mass equals, bit for bit, the running sum the descent computes over its
children.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

DEFAULT_FANOUT = 4


class SumTree(NamedTuple):
    """Sum tree state (see module doc for the layout)."""

    levels: tuple[jax.Array, ...]  # levels[k]: f32[rows_k, F], node masses at depth k
    leaves: jax.Array  # f32[capacity], the priorities (depth D)


def depth(capacity: int, fanout: int) -> int:
    """``D``: the smallest ``d >= 1`` with ``fanout ** d >= capacity``."""
    d = 1
    while fanout**d < capacity:
        d += 1
    return d


def init(capacity: int, fanout: int = DEFAULT_FANOUT) -> SumTree:
    """An all-zero tree of ``capacity >= 1`` leaves and ``fanout >= 2`` (see module doc)."""
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    if fanout < 2:
        raise ValueError(f"fanout must be >= 2, got {fanout}")
    d = depth(capacity, fanout)
    levels = []
    for k in range(d):
        nodes = -(-capacity // fanout ** (d - k))  # ceil: depth-k nodes above a real leaf
        levels.append(jnp.zeros((-(-nodes // fanout), fanout), jnp.float32))
    return SumTree(levels=tuple(levels), leaves=jnp.zeros((capacity,), jnp.float32))


def total(tree: SumTree) -> jax.Array:
    """Sum of all priorities, ``f32[]`` (the root)."""
    return tree.levels[0][0, 0]


def priorities(tree: SumTree) -> jax.Array:
    """The leaves, ``f32[capacity]``."""
    return tree.leaves


def _children(tree: SumTree, k: int, node: jax.Array) -> jax.Array:
    """``f32[B, F]``: masses of the children of depth-``k`` nodes ``i32[B]`` (padding reads 0)."""
    if k + 1 < len(tree.levels):
        return tree.levels[k + 1].at[node].get(mode="fill", fill_value=0.0)
    fanout = tree.levels[0].shape[-1]
    rows = node[:, None] * fanout + jnp.arange(fanout, dtype=jnp.int32)
    return tree.leaves.at[rows].get(mode="fill", fill_value=0.0)


def _running_sums(masses: jax.Array) -> list[jax.Array]:
    """``F + 1`` arrays ``f32[B]``: ``sum(masses[:, :j])`` for ``j = 0..F``, left to right.

    One fixed summation order everywhere (unrolled: ``F`` is small and static, and a cumsum
    lowers to a slow reduce-window on CPU), so a parent is bit-identical to its children's
    running sum in the descent.
    """
    sums = [jnp.zeros(masses.shape[:-1], masses.dtype)]
    for j in range(masses.shape[-1]):
        sums.append(sums[-1] + masses[..., j])
    return sums


def _set_leaves(leaves: jax.Array, targets: jax.Array, values: jax.Array) -> jax.Array:
    """``leaves`` with ``leaves[targets[j]] = values[j]``; the last duplicate wins.

    ``targets i32[B]`` outside ``[0, capacity)`` are dropped. A scatter-set leaves the order of
    duplicate writes unspecified, so each position first claims its leaf with an order-free
    scatter-max: touched leaves are reset to -inf, then take the max of the claims ``j - B``
    (negative, increasing with ``j``), so each ends up holding the claim of its last occurrence
    in the batch, and only those winners write. O(B), no sort.
    """
    b = targets.shape[0]
    claims = jnp.arange(b, dtype=jnp.float32) - b
    marked = leaves.at[targets].set(-jnp.inf, mode="drop").at[targets].max(claims, mode="drop")
    won = marked.at[targets].get(mode="fill", fill_value=jnp.nan) == claims
    capacity = leaves.shape[-1]
    return marked.at[jnp.where(won, targets, capacity)].set(values, mode="drop")


def update(tree: SumTree, indices: jax.Array, values: jax.Array) -> SumTree:
    """Set ``leaves[indices[j]] = values[j]`` for a batch and recompute their ancestors.

    Args:
      tree: the tree.
      indices: ``i32[B]`` leaf indices in ``[0, capacity)``; out-of-range indices are ignored.
      values: ``f32[B]`` new priorities, ``>= 0`` and finite.

    Returns:
      The updated tree (same shapes).

    Duplicate indices in one batch: the LAST occurrence in the batch wins, deterministically on
    every backend (earlier occurrences are resolved away before the write, see
    :func:`_set_leaves`).

    Cost: O(B) to write the leaves, then ``D`` levels, each a gather of ``B`` rows of ``F``
    children and a scatter of ``B`` sums. Every ancestor is recomputed from its children (no
    delta accumulation); an ancestor shared by several leaves is written several times with the
    same value, so the order of those writes does not matter.
    """
    chex.assert_rank([indices, values], 1)
    chex.assert_equal_shape([indices, values])
    capacity, fanout = tree.leaves.shape[-1], tree.levels[0].shape[-1]
    indices = indices.astype(jnp.int32)
    in_range = (indices >= 0) & (indices < capacity)
    leaves = _set_leaves(
        tree.leaves, jnp.where(in_range, indices, capacity), values.astype(jnp.float32)
    )
    levels = list(tree.levels)
    # Out-of-range entries walk up from leaf 0: recomputing a node from its children is a no-op
    # when nothing below it changed, so this is harmless and keeps the loop branch-free.
    node = jnp.where(in_range, indices, 0)
    for k in reversed(range(len(levels))):
        node = node // fanout
        mass = _running_sums(_children(SumTree(tuple(levels), leaves), k, node))[-1]
        levels[k] = levels[k].reshape(-1).at[node].set(mass).reshape(levels[k].shape)
    return SumTree(tuple(levels), leaves)


def _descend(masses: jax.Array, node: jax.Array, values: jax.Array):
    """One level down: ``(child node i32[B], value left inside that child f32[B])``.

    ``masses f32[B, F]`` are the children of ``node i32[B]``; ``values f32[B]`` are ``>= 0``.
    The child is the last one with positive mass whose running sum before it is ``<= value``:
    the interval holding the value, or the last positive child past the end; child 0 if all
    masses are 0. A positive child preceded only by empty ones has running sum 0 ``<= value``,
    so a node with positive mass always has such a child, and ``value - running sum >= 0``
    keeps that true one level down: the descent never enters an empty subtree.
    """
    fanout = masses.shape[-1]
    before = jnp.stack(_running_sums(masses)[:-1], axis=-1)
    child_ids = jnp.arange(fanout, dtype=jnp.int32)
    candidate = ((masses > 0) & (before <= values[:, None])) | (child_ids == 0)
    # Both results are reductions on purpose: XLA materializes them, where an elementwise
    # "node * F + child" would be re-derived from every earlier level inside each later fusion.
    child = jnp.max(jnp.where(candidate, node[:, None] * fanout + child_ids, -1), axis=-1)
    # Running sums never decrease, so the last candidate leaves the smallest gap. Gaps of
    # candidates are >= 0, and non-negative floats order like their int32 bit patterns: an
    # integer min stays a plain XLA loop, where XLA:CPU may hand a float one to a library kernel
    # whose thread hand-offs cost far more than the work at these sizes.
    gaps = jax.lax.bitcast_convert_type(values[:, None] - before, jnp.int32)
    no_gap = jnp.iinfo(jnp.int32).max
    left = jnp.min(jnp.where(candidate, gaps, no_gap), axis=-1)
    return child, jax.lax.bitcast_convert_type(left, jnp.float32)


def sample(tree: SumTree, values: jax.Array) -> jax.Array:
    """Leaf indices ``i32[B]`` for query masses ``values f32[B]``, all descending at once.

    For ``v`` in ``[0, total]`` this is the leaf ``i`` with ``cumsum[i-1] <= v < cumsum[i]``
    (float32 running sums). When ``total > 0`` the leaf always has a positive priority, for
    any finite ``v``: ``v <= 0`` gives the first positive leaf, ``v >= total`` the last one, and
    the descent only enters children with positive mass, whatever the rounding. When
    ``total == 0`` every value gives leaf 0.
    """
    chex.assert_rank(values, 1)
    values = jnp.maximum(values.astype(jnp.float32), 0.0)
    node = jnp.zeros(values.shape, jnp.int32)
    for k in range(len(tree.levels)):
        node, values = _descend(_children(tree, k, node), node, values)
    return node


def stratified_values(key: jax.Array, batch_size: int, total_mass: jax.Array) -> jax.Array:
    """``f32[batch_size]``: value ``j`` is uniform in stratum ``[j, j+1) * total_mass / B``.

    The strata split ``[0, total_mass)`` into ``batch_size`` equal parts (the PER paper's
    stratified sampling); values are clamped below ``total_mass`` against rounding.
    """
    total_mass = jnp.asarray(total_mass, jnp.float32)
    chex.assert_rank(total_mass, 0)
    u = jax.random.uniform(key, (batch_size,), jnp.float32)
    strata = jnp.arange(batch_size, dtype=jnp.float32)
    values = (strata + u) * (total_mass / batch_size)
    return jnp.minimum(values, jnp.nextafter(total_mass, jnp.float32(0)))
