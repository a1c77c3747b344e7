"""Sum tree against a plain NumPy reference (a leaf array, float64 cumsum + searchsorted)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dqn_jax import rng, sumtree

# Compiled once per shape; hypothesis draws shapes from small fixed sets to keep this fast.
update = jax.jit(sumtree.update)
sample = jax.jit(sumtree.sample)
stratified = jax.jit(sumtree.stratified_values, static_argnums=1)

CAPACITIES = [1, 2, 5, 16, 17, 100]
FANOUTS = [2, 4]
BATCH = 8  # every update batch in the property tests has this size
# float32 tree sums vs a float64 sum: the relative error of a sum of non-negative terms is at
# most (number of additions on a root-to-leaf path) * 2**-24, far below this for these sizes.
TOTAL_RTOL = 1e-5

SETTINGS = settings(max_examples=30, deadline=None)


def reference_leaves(capacity: int, batches) -> np.ndarray:
    """Leaves after applying ``batches`` of (indices, values) in order, one write at a time."""
    leaves = np.zeros(capacity, np.float32)
    for indices, values in batches:
        for i, v in zip(indices, values, strict=True):
            leaves[i] = v  # sequential writes: the last duplicate wins
    return leaves


def reference_sample(leaves: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Leaf ``i`` with ``cumsum[i-1] <= v < cumsum[i]`` (float64); the last positive one past it."""
    cumsum = np.cumsum(leaves.astype(np.float64))
    last_positive = np.flatnonzero(leaves > 0)[-1]
    return np.minimum(np.searchsorted(cumsum, values, side="right"), last_positive)


def build(capacity: int, fanout: int, leaves: np.ndarray) -> sumtree.SumTree:
    return update(sumtree.init(capacity, fanout), jnp.arange(capacity), jnp.asarray(leaves))


def assert_parents_are_sums(tree: sumtree.SumTree) -> None:
    """Every stored node is exactly the left-to-right float32 sum of its children, and nothing
    outside the nodes of the layout is ever written (padding stays 0)."""
    fanout = tree.nodes[0].shape[-1]
    below = np.asarray(tree.leaves)
    levels = [np.asarray(level) for level in sumtree.levels(tree)]
    for level in reversed(levels):
        padded = np.zeros(level.size * fanout, np.float32)
        padded[: below.size] = below
        expected = np.zeros(level.size, np.float32)
        for j in range(fanout):
            expected = expected + padded.reshape(-1, fanout)[:, j]
        np.testing.assert_array_equal(level, expected)
        below = level
    assert levels[0].shape == (1,) and float(sumtree.total(tree)) == levels[0][0]
    # Depths are disjoint slices of `nodes`: no other entry (padding, the rest of the root's
    # row) holds anything.
    stored = sum(np.count_nonzero(np.asarray(x)) for x in tree.nodes)
    assert stored == sum(map(np.count_nonzero, levels))


update_batches = st.lists(
    st.tuples(
        st.lists(st.integers(0, 99), min_size=BATCH, max_size=BATCH),
        st.lists(
            st.one_of(st.just(0.0), st.floats(2.0**-10, 1024.0, width=32)),
            min_size=BATCH,
            max_size=BATCH,
        ),
    ),
    min_size=1,
    max_size=5,
)


@SETTINGS
@given(st.sampled_from(CAPACITIES), st.sampled_from(FANOUTS), update_batches)
def test_updates_match_reference_and_parents_are_recomputed(capacity, fanout, batches):
    # Indices drawn in [0, 100) are folded into the capacity: many duplicates per batch.
    batches = [([i % capacity for i in idx], vals) for idx, vals in batches]
    tree = sumtree.init(capacity, fanout)
    for indices, values in batches:
        tree = update(tree, jnp.asarray(indices, jnp.int32), jnp.asarray(values, jnp.float32))
    expected = reference_leaves(capacity, batches)
    np.testing.assert_array_equal(np.asarray(sumtree.priorities(tree)), expected)
    np.testing.assert_allclose(
        float(sumtree.total(tree)), expected.astype(np.float64).sum(), rtol=TOTAL_RTOL
    )
    assert_parents_are_sums(tree)


@pytest.mark.parametrize(("capacity", "fanout"), [(17, 2), (1000, 4), (3000, 4), (5000, 3)])
def test_dense_top_and_per_leaf_walk_store_identical_nodes(capacity, fanout, monkeypatch):
    # `update` walks up per leaf through the deep depths and recomputes the few top ones whole.
    # Both ways must store the same bits: force all-per-leaf (only the root row whole) and
    # all-whole, and compare after batches full of duplicates and zeros.
    rng = np.random.default_rng(capacity)
    batches = [
        (rng.integers(0, capacity, 64), rng.uniform(0, 4, 64).astype(np.float32) * (i % 3 > 0))
        for i in range(6)
    ]
    trees = []
    for dense_nodes in (0, 10**9):
        monkeypatch.setattr(sumtree, "DENSE_NODES", dense_nodes)
        step = jax.jit(lambda t, i, v: sumtree.update(t, i, v))  # a fresh trace per setting
        tree = sumtree.init(capacity, fanout)
        for indices, values in batches:
            tree = step(tree, jnp.asarray(indices, jnp.int32), jnp.asarray(values))
        assert_parents_are_sums(tree)
        trees.append(tree)
    np.testing.assert_array_equal(np.asarray(trees[0].leaves), np.asarray(trees[1].leaves))
    for a, b in zip(trees[0].nodes, trees[1].nodes, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(trees[0].leaves), reference_leaves(capacity, batches))


def test_duplicates_in_one_batch_last_wins():
    tree = sumtree.init(6, 2)
    tree = update(tree, jnp.array([3, 1, 3, 5, 3]), jnp.array([1.0, 2.0, 3.0, 4.0, 7.0]))
    np.testing.assert_array_equal(np.asarray(tree.leaves), [0, 2, 0, 7, 0, 4])
    assert float(sumtree.total(tree)) == 13.0
    # The same rule without jit, and with the duplicates the other way round.
    tree = sumtree.update(tree, jnp.array([0, 0]), jnp.array([9.0, 0.5]))
    assert float(tree.leaves[0]) == 0.5


def test_out_of_range_indices_are_ignored():
    tree = update(sumtree.init(5, 4), jnp.array([-1, 5, 99, 2]), jnp.array([1.0, 1.0, 1.0, 3.0]))
    np.testing.assert_array_equal(np.asarray(tree.leaves), [0, 0, 3, 0, 0])
    assert float(sumtree.total(tree)) == 3.0
    assert_parents_are_sums(tree)


leaf_arrays = st.lists(
    st.one_of(st.just(0.0), st.floats(0.125, 8.0, width=32)), min_size=1, max_size=100
).filter(lambda p: max(p) > 0)


@SETTINGS
@given(
    st.sampled_from(FANOUTS),
    leaf_arrays,
    st.lists(st.floats(0.1, 0.9), min_size=BATCH, max_size=BATCH),
    st.randoms(use_true_random=False),
)
def test_sample_matches_reference_inside_intervals(fanout, leaves, fractions, rng):
    # Capacity from the fixed set (padding with zero leaves) so shapes, and compiles, repeat.
    capacity = next(c for c in CAPACITIES if c >= len(leaves))
    leaves = np.asarray(leaves + [0.0] * (capacity - len(leaves)), np.float32)
    cumsum = np.cumsum(leaves.astype(np.float64))
    positive = np.flatnonzero(leaves > 0)
    targets = np.array([rng.choice(positive) for _ in range(BATCH)])
    # 10%..90% into the target's interval: the float32 running sums are within ~1e-5 of the
    # float64 ones here, far from the interval's edges (priorities >= 0.125, total <= 800).
    values = cumsum[targets] - leaves[targets] * (1.0 - np.asarray(fractions))
    got = np.asarray(sample(build(capacity, fanout, leaves), jnp.asarray(values, jnp.float32)))
    np.testing.assert_array_equal(got, targets)
    np.testing.assert_array_equal(got, reference_sample(leaves, values))


@SETTINGS
@given(st.sampled_from(FANOUTS), leaf_arrays)
def test_sample_never_returns_an_empty_leaf_at_the_edges(fanout, leaves):
    capacity = next(c for c in CAPACITIES if c >= len(leaves))
    leaves = np.asarray(leaves + [0.0] * (capacity - len(leaves)), np.float32)
    tree = build(capacity, fanout, leaves)
    total = sumtree.total(tree)
    edges = jnp.stack(
        [
            jnp.float32(0.0),
            jnp.float32(-1.0),
            total,
            jnp.nextafter(total, jnp.float32(jnp.inf)),
            total * 2,
            jnp.float32(1e30),
            jnp.nextafter(total, jnp.float32(0)),
            total / 2,
        ]
    )
    got = np.asarray(sample(tree, edges))
    assert (leaves[got] > 0).all(), (leaves, got)
    positive = np.flatnonzero(leaves > 0)
    assert got[0] == got[1] == positive[0]  # v <= 0: the first positive leaf
    assert got[2] == got[3] == got[4] == got[5] == positive[-1]  # v >= total: the last one


def test_edges_with_empty_leaves_around():
    leaves = np.array([0, 0, 2, 0, 3, 0, 0], np.float32)
    tree = build(7, 2, leaves)
    total = sumtree.total(tree)
    values = jnp.stack([0.0, total, jnp.nextafter(total, jnp.inf), 1.999, 2.0, 4.999])
    np.testing.assert_array_equal(np.asarray(sample(tree, values)), [2, 4, 4, 2, 4, 4])


def test_empty_tree_samples_leaf_zero():
    tree = sumtree.init(10)
    assert float(sumtree.total(tree)) == 0.0
    np.testing.assert_array_equal(np.asarray(sample(tree, jnp.array([0.0, 1.0, -1.0]))), 0)


@pytest.mark.parametrize("fanout", FANOUTS)
def test_extreme_priorities_no_nan_no_drift_no_empty_leaf(fanout):
    capacity = 100
    leaves = np.zeros(capacity, np.float32)
    leaves[1::2] = 1e-8
    leaves[::10] = 1e8
    tree = build(capacity, fanout, leaves)
    assert np.isfinite(np.asarray(tree.leaves)).all()
    assert all(np.isfinite(np.asarray(x)).all() for x in tree.nodes)
    np.testing.assert_allclose(float(sumtree.total(tree)), leaves.astype(np.float64).sum(), 1e-6)
    values = sumtree.stratified_values(jax.random.key(0), 1000, sumtree.total(tree))
    got = np.asarray(sample(tree, values))
    assert (leaves[got] > 0).all()
    # Setting the huge leaves back to tiny ones leaves exactly the tiny mass: a tree that adds
    # deltas would keep garbage of the order of 1e8 * 2**-24 here (flashbax issue #52).
    for _ in range(20):
        tree = update(tree, jnp.arange(0, capacity, 10), jnp.full(10, 1e8, jnp.float32))
        tree = update(tree, jnp.arange(0, capacity, 10), jnp.full(10, 1e-8, jnp.float32))
    small = np.where(leaves > 0, np.float32(1e-8), np.float32(0))
    np.testing.assert_array_equal(np.asarray(tree.leaves), small)
    np.testing.assert_allclose(float(sumtree.total(tree)), small.astype(np.float64).sum(), 1e-6)
    assert_parents_are_sums(tree)
    got = np.asarray(sample(tree, sumtree.stratified_values(jax.random.key(1), 64, small.sum())))
    assert (small[got] > 0).all()


def test_all_equal_priorities_sample_every_stratum_evenly():
    capacity = 1000
    tree = build(capacity, 4, np.ones(capacity, np.float32))
    assert float(sumtree.total(tree)) == capacity
    got = np.asarray(sample(tree, stratified(jax.random.key(3), capacity, sumtree.total(tree))))
    # One stratum per leaf: leaf j is drawn from stratum j, up to rounding at a stratum's end.
    assert np.abs(got - np.arange(capacity)).max() <= 1
    assert len(np.unique(got)) >= capacity - 5


# chi-square 0.999 quantiles (scipy.stats.chi2.ppf(0.999, df)) for the test below.
CHI2_999 = {6: 22.458}


@pytest.mark.parametrize("stratified_draws", [True, False])
def test_sampling_frequencies_match_priorities(stratified_draws):
    leaves = np.array([0, 1, 2, 0, 3, 4, 0.5, 0, 6, 0.5], np.float32)
    tree = build(len(leaves), 4, leaves)
    total = sumtree.total(tree)
    draws, batch = 200, 64
    if stratified_draws:
        keys = jax.random.split(jax.random.key(42), draws)
        values = jax.vmap(lambda k: sumtree.stratified_values(k, batch, total))(keys).ravel()
    else:
        values = np.random.default_rng(42).uniform(0, float(total), draws * batch)
    counts = np.bincount(np.asarray(sample(tree, jnp.asarray(values, jnp.float32))), minlength=10)
    assert counts[leaves == 0].sum() == 0
    positive = leaves > 0
    expected = draws * batch * leaves[positive] / leaves.sum()
    chi2 = (((counts[positive] - expected) ** 2) / expected).sum()
    # Fixed seeds, so this is deterministic; a false alarm would have probability 0.001.
    # Stratified draws vary less than multinomial ones, which only makes the test conservative.
    assert chi2 < CHI2_999[positive.sum() - 1], (counts, expected, chi2)


def test_stratified_values_one_per_stratum():
    batch, total = 64, jnp.float32(37.5)
    values = np.asarray(stratified(jax.random.key(0), batch, total))
    assert values.shape == (batch,) and values.dtype == np.float32
    width = 37.5 / batch
    strata = np.arange(batch)
    assert (values >= strata * width * (1 - 1e-6)).all()
    assert (values <= (strata + 1) * width * (1 + 1e-6)).all()
    assert (values < 37.5).all()
    assert not np.array_equal(values, np.asarray(stratified(jax.random.key(1), batch, total)))
    # Even a full stratum of rounding cannot reach the total.
    tiny = np.float32(1e-30)
    assert (np.asarray(stratified(jax.random.key(2), 1, jnp.float32(tiny))) < tiny).all()


@pytest.mark.slow
def test_stratified_uniforms_are_jax_random_uniform_bit_for_bit():
    # The unrolled threefry draws exactly jax.random.uniform's numbers, for typed and raw keys,
    # jitted or not, and under vmap; other key kinds fall back to jax.random.uniform itself.
    batch, total = 64, jnp.float32(123.25)

    def expected(key):
        u = jax.random.uniform(key, (batch,), jnp.float32)
        values = (jnp.arange(batch, dtype=jnp.float32) + u) * (total / batch)
        return np.asarray(jnp.minimum(values, jnp.nextafter(total, jnp.float32(0))))

    keys = [jax.random.key(0), jax.random.key(2**31 - 1), jax.random.PRNGKey(7)]
    keys.append(jax.random.key(3, impl="rbg"))
    for key in keys:
        np.testing.assert_array_equal(np.asarray(stratified(key, batch, total)), expected(key))
        np.testing.assert_array_equal(
            np.asarray(sumtree.stratified_values(key, batch, total)), expected(key)
        )
    split = jax.random.split(jax.random.key(5), 4)
    batched = jax.jit(jax.vmap(lambda k: sumtree.stratified_values(k, batch, total)))(split)
    for key, got in zip(split, np.asarray(batched), strict=True):
        np.testing.assert_array_equal(got, expected(key))
    # dqn_jax.rng.bits is jax.random.bits word for word, for any length.
    for n in (1, 2, 7, 64, 1001):
        for key in keys:
            np.testing.assert_array_equal(
                np.asarray(rng.bits(key, n)), np.asarray(jax.random.bits(key, (n,), jnp.uint32))
            )
    # The point of unrolling: no threefry primitive (a rolled while loop on CPU) is left.
    jaxpr = str(jax.make_jaxpr(lambda k: sumtree.stratified_values(k, batch, total))(keys[0]))
    assert "threefry" not in jaxpr and "while" not in jaxpr


def test_vmap_over_trees_matches_a_python_loop():
    seeds, capacity = 3, 17
    rng = np.random.default_rng(0)
    indices = rng.integers(0, capacity, (seeds, 4, BATCH)).astype(np.int32)
    values = rng.uniform(0, 5, (seeds, 4, BATCH)).astype(np.float32)
    queries = rng.uniform(0, 10, (seeds, BATCH)).astype(np.float32)

    trees = jax.vmap(lambda _: sumtree.init(capacity))(jnp.arange(seeds))
    batched_update = jax.jit(jax.vmap(sumtree.update))
    for step in range(4):
        trees = batched_update(trees, indices[:, step], values[:, step])
    sampled = jax.jit(jax.vmap(sumtree.sample))(trees, queries)

    for s in range(seeds):
        tree = sumtree.init(capacity)
        for step in range(4):
            tree = update(tree, indices[s, step], values[s, step])
        one = jax.tree.map(lambda x, s=s: x[s], trees)
        np.testing.assert_array_equal(np.asarray(one.leaves), np.asarray(tree.leaves))
        for a, b in zip(one.nodes, tree.nodes, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(sampled[s]), np.asarray(sample(tree, queries[s])))


def test_init_validates_and_shapes_are_static():
    with pytest.raises(ValueError, match="capacity"):
        sumtree.init(0)
    with pytest.raises(ValueError, match="fanout"):
        sumtree.init(10, fanout=1)
    tree = sumtree.init(1_000_000)
    assert tree.leaves.shape == (1_000_000,)
    # Internal depths packed into few arrays, none over GROUP_FLOATS floats unless one depth is.
    assert all(x.shape[-1] == sumtree.DEFAULT_FANOUT for x in tree.nodes)
    assert all(x.dtype == jnp.float32 for x in (tree.leaves, *tree.nodes))
    assert 1 < len(tree.nodes) < 5
    assert all(x.size <= sumtree.GROUP_FLOATS for x in tree.nodes[:-1])
    assert len(sumtree.init(100_000).nodes) == 1
    levels = sumtree.levels(tree)
    assert len(levels) == sumtree.depth(1_000_000, sumtree.DEFAULT_FANOUT)
    fanout = sumtree.DEFAULT_FANOUT
    for k, level in enumerate(levels):  # depth k holds one node per F**(D-k) leaves
        assert level.shape == (-(-1_000_000 // fanout ** (len(levels) - k)),)


@pytest.mark.parametrize(("capacity", "fanout"), [(1000, 4), (300, 2)])
def test_the_multi_array_layout_matches_the_reference(capacity, fanout, monkeypatch):
    # A 1M buffer splits its nodes over several arrays (from GROUP_FLOATS, 64 Ki); shrink the
    # group so a small tree does too, then check updates, sums and samples against NumPy.
    monkeypatch.setattr(sumtree, "GROUP_FLOATS", 64)
    tree = sumtree.init(capacity, fanout)
    assert len(tree.nodes) >= 3, [x.shape for x in tree.nodes]
    gen = np.random.default_rng(capacity)
    step = jax.jit(lambda t, i, v: sumtree.update(t, i, v))  # a fresh trace for this layout
    batches = [
        (gen.integers(0, capacity, 64), gen.uniform(0.125, 4, 64).astype(np.float32))
        for _ in range(6)
    ] + [(np.arange(capacity), np.float32(gen.uniform(0.125, 4, capacity)))]
    for indices, values in batches[:-1]:
        tree = step(tree, jnp.asarray(indices, jnp.int32), jnp.asarray(values))
    np.testing.assert_array_equal(tree.leaves, reference_leaves(capacity, batches[:-1]))
    assert_parents_are_sums(tree)
    tree = step(tree, jnp.arange(capacity), jnp.asarray(batches[-1][1]))  # every leaf positive
    assert_parents_are_sums(tree)
    leaves = np.asarray(tree.leaves)
    cumsum = np.cumsum(leaves.astype(np.float64))
    targets = gen.integers(0, capacity, 32)
    values = cumsum[targets] - leaves[targets] * gen.uniform(0.1, 0.9, 32)
    got = np.asarray(jax.jit(sumtree.sample)(tree, jnp.asarray(values, jnp.float32)))
    np.testing.assert_array_equal(got, targets)


def raw_keys(keys):
    typed = jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)
    return np.asarray(jax.random.key_data(keys) if typed else keys)


@pytest.mark.slow
def test_rng_split_and_randint_are_jax_random_bit_for_bit():
    # dqn_jax.rng.split / randint claim jax.random.split / randint's numbers exactly: raw and
    # typed keys, jitted, traced bounds (including the maxval <= 0 edge: zeros).
    keys = [jax.random.key(0), jax.random.PRNGKey(7), jax.random.PRNGKey(2**31 - 1)]
    randint = jax.jit(rng.randint, static_argnums=1)
    for key in keys:
        for n in (1, 2, 5):
            np.testing.assert_array_equal(
                raw_keys(rng.split(key, n)), raw_keys(jax.random.split(key, n))
            )
        for maxval in (1, 3, 1000, 2**31 - 1):
            np.testing.assert_array_equal(
                randint(key, 64, jnp.int32(maxval)),
                jax.random.randint(key, (64,), 0, maxval),
                err_msg=str(maxval),
            )
        np.testing.assert_array_equal(randint(key, 8, jnp.int32(0)), np.zeros(8, np.int32))
