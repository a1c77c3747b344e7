"""A sum tree over a fixed number of non-negative priorities, as plain arrays.

The tree has fanout ``F`` (default 4; ``F = 2`` is the textbook binary sum tree) and depth
``D = max(1, ceil(log_F(capacity)))``: the root is at depth 0, the leaves at depth ``D``, and
node ``n`` at depth ``k`` has children ``n*F .. n*F + F-1`` at depth ``k+1``. A batch sample is
``D`` static levels of a gather of ``B`` rows of ``F`` floats and two small reductions; a batch
update is the same walk upwards (gather, sum, scatter of ``B``), except that the few top depths
are recomputed whole in one pass. On CPU the fixed cost per XLA operation and the per-element
cost of these tiny gathers and reductions dominate: ``F = 4`` measured fastest
(``benchmarks/replay.py``; ``F = 3, 5, 8`` all cost more per step).

Storage (all float32):

- ``leaves f32[capacity]``: the priorities. Leaves ``capacity .. F**D - 1`` are padding: not
  stored, read as 0, never sampled.
- ``nodes``: a tuple of ``f32[R_g, F]`` arrays holding the masses of all internal nodes (depths
  ``0 .. D-1``), depth after depth, each depth flattened row-major and zero-padded to whole
  rows. Depths are packed into one array while it stays within ``GROUP_FLOATS`` floats (64 Ki);
  a deeper depth that does not fit starts the next array (with ``F = 4``: one array for a
  capacity of 100,000, three for 1,000,000). ``nodes[0][0, 0]`` is the root (the total; the
  rest of that row stays 0). Depth ``k`` lives in array ``g_k`` from row ``start_k``: node ``n`` is
  ``nodes[g_k].reshape(-1)[start_k * F + n]``, so row ``start_{k+1} + n`` of array ``g_{k+1}``
  holds the ``F`` children of depth-``k`` node ``n``. Few arrays: fewer buffers to pass, donate
  and checkpoint; none too large: XLA:CPU splits an operation that reads a large array over two
  threads, and at these sizes the hand-off costs more than the operation.

The capacity and fanout are static because they are shapes (``leaves.shape[-1]``,
``nodes[0].shape[-1]``); the depth and the placement of every depth follow from them. A
:class:`SumTree` is a pytree of arrays only, and every function here is pure, jittable and
vmappable over a leading axis of trees.

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

from dqn_jax import rng

DEFAULT_FANOUT = 4


class SumTree(NamedTuple):
    """Sum tree state (see module doc for the layout)."""

    nodes: tuple[jax.Array, ...]  # f32[R_g, F] each: internal node masses, depths packed in order
    leaves: jax.Array  # f32[capacity], the priorities (depth D)


def depth(capacity: int, fanout: int) -> int:
    """``D``: the smallest ``d >= 1`` with ``fanout ** d >= capacity``."""
    d = 1
    while fanout**d < capacity:
        d += 1
    return d


# Internal depths are packed, in order, into arrays of at most this many floats (a deeper depth
# larger than that gets an array of its own): XLA:CPU splits an operation that reads a larger
# array over two threads, and at these sizes the hand-off costs more than the whole operation.
GROUP_FLOATS = 1 << 16


class _Layout(NamedTuple):
    depth: int  # D
    group: list[int]  # group[k]: which array of `nodes` holds depth k
    start: list[int]  # start[k]: first row of depth k in that array
    count: list[int]  # count[k]: number of nodes at depth k
    rows: list[int]  # rows[g]: rows of array g


def _layout(capacity: int, fanout: int) -> _Layout:
    """Where each internal depth lives (static: a function of the shapes only)."""
    d = depth(capacity, fanout)
    group, start, count, rows = [], [], [], [0]
    for k in range(d):
        nodes = -(-capacity // fanout ** (d - k))  # ceil: depth-k nodes above a real leaf
        need = -(-nodes // fanout)  # whole rows
        if k and (rows[-1] + need) * fanout > GROUP_FLOATS:
            rows.append(0)
        group.append(len(rows) - 1)
        start.append(rows[-1])
        count.append(nodes)
        rows[-1] += need
    return _Layout(d, group, start, count, rows)


def _shape(tree: SumTree) -> tuple[int, int]:
    return tree.leaves.shape[-1], tree.nodes[0].shape[-1]


def init(capacity: int, fanout: int = DEFAULT_FANOUT) -> SumTree:
    """An all-zero tree of ``capacity >= 1`` leaves and ``fanout >= 2`` (see module doc)."""
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    if fanout < 2:
        raise ValueError(f"fanout must be >= 2, got {fanout}")
    rows = _layout(capacity, fanout).rows
    return SumTree(
        nodes=tuple(jnp.zeros((r, fanout), jnp.float32) for r in rows),
        leaves=jnp.zeros((capacity,), jnp.float32),
    )


def total(tree: SumTree) -> jax.Array:
    """Sum of all priorities, ``f32[]`` (the root)."""
    return tree.nodes[0][..., 0, 0]


def priorities(tree: SumTree) -> jax.Array:
    """The leaves, ``f32[capacity]``."""
    return tree.leaves


def levels(tree: SumTree) -> tuple[jax.Array, ...]:
    """The internal node masses by depth, for inspection: ``D`` arrays, ``f32[nodes at depth k]``.

    ``levels(tree)[0]`` is ``f32[1]``, the root; the leaves are :func:`priorities`.
    """
    capacity, fanout = _shape(tree)
    lay = _layout(capacity, fanout)
    flat = [x.reshape(*x.shape[:-2], -1) for x in tree.nodes]
    return tuple(
        flat[g][..., start * fanout : start * fanout + n]
        for g, start, n in zip(lay.group, lay.start, lay.count, strict=True)
    )


# Depths with at most this many nodes are recomputed whole by `update` rather than per leaf.
DENSE_NODES = 64


def _dense_depths(capacity: int, fanout: int) -> int:
    """``T``: :func:`update` recomputes depths ``0 .. T-1`` (``T >= 1``) whole, from depth ``T``.

    They are the depths with at most ``DENSE_NODES`` nodes: recomputing ``N`` masses from ``F*N``
    children is one fused pass, cheaper than ``T`` rounds of per-leaf gathers and scatters.
    """
    lay = _layout(capacity, fanout)
    small = [n <= DENSE_NODES and g == 0 for n, g in zip(lay.count, lay.group, strict=True)]
    return max(1, sum(small))


def _children(tree: SumTree, k: int, node: jax.Array) -> jax.Array:
    """``f32[B, F]``: masses of the children of depth-``k`` nodes ``i32[B]`` (padding reads 0)."""
    capacity, fanout = _shape(tree)
    lay = _layout(capacity, fanout)
    if k + 1 < lay.depth:
        return tree.nodes[lay.group[k + 1]][lay.start[k + 1] + node]
    rows = node[:, None] * fanout + jnp.arange(fanout, dtype=jnp.int32)
    return tree.leaves.at[rows].get(mode="fill", fill_value=0.0)


def _sum(masses: jax.Array) -> jax.Array:
    """``f32[B]``: ``masses f32[B, F]`` summed left to right (the one summation order used)."""
    mass = masses[:, 0]
    for j in range(1, masses.shape[-1]):
        mass = mass + masses[:, j]
    return mass


def _set_leaves(leaves: jax.Array, targets: jax.Array, values: jax.Array) -> jax.Array:
    """``leaves`` with ``leaves[targets[j]] = values[j]``; the last duplicate wins.

    ``targets i32[B]`` outside ``[0, capacity)`` are dropped. A scatter-set leaves the order of
    duplicate writes unspecified, so each position first claims its leaf with an order-free
    scatter-min of the claims ``-1 - j``: they are negative, below every priority (``>= 0``), and
    decrease with ``j``, so each touched leaf ends up holding the claim of its last occurrence
    in the batch, and only those winners write. Two scatters, O(B), no sort.
    """
    b = targets.shape[0]
    claims = -1.0 - jnp.arange(b, dtype=jnp.float32)
    marked = leaves.at[targets].min(claims, mode="drop")
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

    Cost: two scatters of ``B`` to write the leaves; then, for each depth from ``D-1`` up to
    ``T`` (:func:`_dense_depths`), a gather of ``B`` rows of ``F`` children and a scatter of
    ``B`` sums; then the top depths ``0 .. T-1`` (at most ``DENSE_NODES`` nodes each) are
    recomputed whole from depth ``T`` in one fused pass and written with one scatter. Every
    ancestor is recomputed from its children (no delta accumulation), summed in the same left to
    right order either way; an ancestor shared by several leaves is written several times with
    the same value, so the order of those writes does not matter.
    """
    chex.assert_rank([indices, values], 1)
    chex.assert_equal_shape([indices, values])
    capacity, fanout = _shape(tree)
    lay = _layout(capacity, fanout)
    d, start, count = lay.depth, lay.start, lay.count
    indices = indices.astype(jnp.int32)
    in_range = (indices >= 0) & (indices < capacity)
    leaves = _set_leaves(
        tree.leaves, jnp.where(in_range, indices, capacity), values.astype(jnp.float32)
    )
    flat = [x.reshape(-1) for x in tree.nodes]

    def current() -> SumTree:
        return SumTree(tuple(x.reshape(-1, fanout) for x in flat), leaves)

    dense = _dense_depths(capacity, fanout)
    # Out-of-range entries walk up from leaf 0: recomputing a node from its children is a no-op
    # when nothing below it changed, so this is harmless and keeps the loop branch-free.
    leaf = jnp.where(in_range, indices, 0)
    for k in reversed(range(dense, d)):
        node = leaf // fanout ** (d - k)
        mass = _sum(_children(current(), k, node))
        g = lay.group[k]
        flat[g] = flat[g].at[start[k] * fanout + node].set(mass)
    # The top depths hold few nodes: recompute them all from the depth below, in one pass. The
    # nodes of depth `dense` start at row start[dense], and their first count[dense - 1] rows
    # are the children of all depth dense-1 nodes; padded with zero rows to F**dense nodes,
    # every depth above is a plain reshape and row sum.
    if dense < d:
        first = start[dense] * fanout
        below = flat[lay.group[dense]][first : first + count[dense - 1] * fanout]
    else:
        below = leaves
    below = jnp.pad(below, (0, fanout**dense - below.shape[0]))
    top = []
    for k in reversed(range(dense)):
        below = _sum(below.reshape(fanout**k, fanout))
        size = -(-count[k] // fanout) * fanout  # the rows of depth k
        top.append(jnp.pad(below, (0, size - below.shape[0])) if k == 0 else below[:size])
    top = jnp.concatenate(top[::-1])  # depths 0 .. dense-1: the first rows of array 0
    positions = jnp.arange(top.shape[0])
    flat[0] = flat[0].at[positions].set(top, indices_are_sorted=True, unique_indices=True)
    return current()


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
    child_ids = jnp.arange(fanout, dtype=jnp.int32)
    # Running sums before each child, in the update's order: adding the masked-out children as
    # exact zeros leaves each sum bit-identical to the left-to-right sum of the children before
    # it. Written as masked adds (not a stack of running sums), XLA fuses them into the two
    # reductions below instead of materializing them as one more operation per level.
    before = jnp.zeros_like(masses)
    for j in range(fanout - 1):
        before = before + jnp.where(child_ids > j, masses[:, j : j + 1], 0.0)
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
    capacity, fanout = _shape(tree)
    values = jnp.maximum(values.astype(jnp.float32), 0.0)
    node = jnp.zeros(values.shape, jnp.int32)
    for k in range(depth(capacity, fanout)):
        node, values = _descend(_children(tree, k, node), node, values)
    return node


def stratified_values(key: jax.Array, batch_size: int, total_mass: jax.Array) -> jax.Array:
    """``f32[batch_size]``: value ``j`` is uniform in stratum ``[j, j+1) * total_mass / B``.

    The strata split ``[0, total_mass)`` into ``batch_size`` equal parts (the PER paper's
    stratified sampling); values are clamped below ``total_mass`` against rounding. ``key`` is
    used once; the uniforms are exactly ``jax.random.uniform(key, (batch_size,))``.
    """
    total_mass = jnp.asarray(total_mass, jnp.float32)
    chex.assert_rank(total_mass, 0)
    u = rng.uniform(key, batch_size)
    strata = jnp.arange(batch_size, dtype=jnp.float32)
    values = (strata + u) * (total_mass / batch_size)
    return jnp.minimum(values, jnp.nextafter(total_mass, jnp.float32(0)))
