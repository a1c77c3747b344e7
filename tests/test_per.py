"""Prioritized replay: the Replay contract, insertion rules, IS weights, sampling frequencies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dqn_jax import per, sumtree
from dqn_jax.replay import Replay, Transition, uniform_replay

OBS = 3


def transitions(n: int, start: int = 0) -> Transition:
    """``n`` transitions whose reward (and obs) is their insertion number ``start + i``."""
    ids = jnp.arange(start, start + n, dtype=jnp.float32)
    return Transition(
        obs=jnp.tile(ids[:, None], (1, OBS)),
        action=ids.astype(jnp.int32) % 2,
        reward=ids,
        discount=jnp.full(n, 0.99, jnp.float32),
        next_obs=jnp.tile(ids[:, None] + 0.5, (1, OBS)),
        last=jnp.zeros(n, jnp.float32),
    )


def example() -> Transition:
    return jax.tree.map(lambda x: x[0], transitions(1))


def leaves(state) -> np.ndarray:
    return np.asarray(sumtree.priorities(state.tree))


def p(abs_td, alpha=0.6, eps=0.01) -> np.ndarray:
    return (np.abs(np.asarray(abs_td, np.float64)) + eps) ** alpha


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"capacity": 0}, "capacity"),
        ({"batch_size": 0}, "batch_size"),
        ({"alpha": -0.1}, "alpha"),
        ({"eps": 0.0}, "eps"),
        ({"eps": -1.0}, "eps"),
        ({"priority_on_insert": "min"}, "priority_on_insert"),
    ],
)
def test_arguments_are_validated(kwargs, name):
    args = {"capacity": 10, "batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=name):
        per.prioritized_replay(**args)


def test_same_record_and_shapes_as_uniform_replay():
    prioritized, uniform = per.prioritized_replay(10, 4), uniform_replay(10, 4)
    assert isinstance(prioritized, Replay) and prioritized._fields == uniform._fields
    # Only the "td" insertion rule reads abs_td in add (the agent then computes it).
    assert not prioritized.needs_priority and not uniform.needs_priority
    assert per.prioritized_replay(10, 4, priority_on_insert="td").needs_priority

    def shapes(buffer):
        def run(key):
            state = buffer.add(buffer.init(example()), transitions(5), None)
            return buffer.sample(state, key, 0.4)

        return jax.tree.map(lambda x: (x.shape, x.dtype), jax.eval_shape(run, jax.random.key(0)))

    assert shapes(prioritized) == shapes(uniform)


@pytest.mark.parametrize("rule", ["max", "td"])
def test_add_wraps_around_a_full_buffer(rule):
    buffer = per.prioritized_replay(5, 2, priority_on_insert=rule)
    add = jax.jit(buffer.add)
    state = add(buffer.init(example()), transitions(3), jnp.array([0.0, 1.0, 2.0]))
    state = add(state, transitions(4, start=3), jnp.array([3.0, 4.0, 5.0, 6.0]))
    # Writes 0,1,2 then 3,4 and wrapping 5 -> slot 0, 6 -> slot 1.
    np.testing.assert_array_equal(np.asarray(state.data.reward), [5, 6, 2, 3, 4])
    np.testing.assert_array_equal(np.asarray(state.data.next_obs[:, 0]), [5.5, 6.5, 2.5, 3.5, 4.5])
    assert int(state.ptr) == 2 and int(state.size) == 5
    if rule == "td":  # overwritten slots carry the new transitions' own priorities
        np.testing.assert_allclose(leaves(state), p([5, 6, 2, 3, 4]), rtol=1e-6)
    else:
        np.testing.assert_array_equal(leaves(state), np.ones(5))
    np.testing.assert_allclose(float(sumtree.total(state.tree)), leaves(state).sum(), rtol=1e-6)


def test_max_rule_gives_new_transitions_the_largest_priority_so_far():
    buffer = per.prioritized_replay(8, 2, priority_on_insert="max")
    add, update = jax.jit(buffer.add), jax.jit(buffer.update)
    state = add(buffer.init(example()), transitions(2), None)
    np.testing.assert_array_equal(leaves(state)[:2], [1.0, 1.0])  # first ones: 1.0
    state = update(state, jnp.array([0, 1]), jnp.array([100.0, 0.0]))
    assert float(state.max_priority) == pytest.approx(p(100.0))
    state = add(state, transitions(3, start=2), jnp.array([0.0, 0.0, 0.0]))  # td ignored
    np.testing.assert_allclose(leaves(state)[2:5], p([100.0] * 3), rtol=1e-6)
    np.testing.assert_allclose(leaves(state)[:2], p([100.0, 0.0]), rtol=1e-6)


def test_td_rule_uses_each_transitions_own_error_and_requires_it():
    buffer = per.prioritized_replay(8, 2, alpha=0.5, eps=0.25, priority_on_insert="td")
    state = jax.jit(buffer.add)(buffer.init(example()), transitions(3), jnp.array([0.0, -2.0, 6.0]))
    np.testing.assert_allclose(leaves(state)[:3], [0.5, 1.5, 2.5], rtol=1e-6)  # sqrt(|td|+.25)
    assert float(state.max_priority) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="abs_td"):
        buffer.add(state, transitions(1), None)


def test_update_duplicates_last_wins_and_empty_slots_are_ignored():
    buffer = per.prioritized_replay(10, 4, alpha=1.0, eps=0.5)
    state = jax.jit(buffer.add)(buffer.init(example()), transitions(3), None)
    state = jax.jit(buffer.update)(state, jnp.array([1, 2, 1, 7]), jnp.array([9.5, 1.5, 0.5, 9.0]))
    # Slot 1 gets the last of its two errors; slot 7 is empty and stays unsampleable.
    np.testing.assert_array_equal(leaves(state)[:4], [1.0, 1.0, 2.0, 0.0])
    assert leaves(state)[7] == 0.0
    assert float(state.max_priority) == 10.0  # 9.5 + 0.5 was seen, even if overwritten


def test_importance_weights_by_hand():
    # Priorities 1, 2, 4 (total 7) in N = 3 slots; a batch draws slots 0, 1, 2, 0.
    # w_i = (N * P(i)) ** -beta / max_j w_j. With beta = 0.5:
    #   (3 * 1/7) ** -0.5 = 1.527525, (3 * 2/7) ** -0.5 = 1.080123, (3 * 4/7) ** -0.5 = 0.763763
    #   normalized by 1.527525: 1, 0.707107, 0.5, 1.
    sampled = jnp.array([1.0, 2.0, 4.0, 1.0])
    np.testing.assert_allclose(
        np.asarray(per.importance_weights(sampled, 0.5)), [1, 0.707107, 0.5, 1], rtol=1e-5
    )
    # beta = 1: 7/3, 7/6, 7/12 -> 1, 0.5, 0.25.  beta = 0: all ones.
    np.testing.assert_allclose(np.asarray(per.importance_weights(sampled, 1.0)), [1, 0.5, 0.25, 1])
    np.testing.assert_array_equal(np.asarray(per.importance_weights(sampled, 0.0)), 1.0)
    # Extreme priorities do not overflow: (1e-8 / 1e8) ** 1 = 1e-16.
    extreme = np.asarray(per.importance_weights(jnp.array([1e-8, 1e8]), 1.0))
    np.testing.assert_allclose(extreme, [1.0, 1e-16], rtol=1e-5)


def test_sample_weights_match_the_hand_computed_table():
    # alpha = 1, eps = 0.5: |td| 0.5, 1.5, 3.5 -> priorities 1, 2, 4 (see the test above).
    buffer = per.prioritized_replay(4, 3, alpha=1.0, eps=0.5, priority_on_insert="td")
    state = buffer.add(buffer.init(example()), transitions(3), jnp.array([0.5, 1.5, 3.5]))
    unnormalized = np.array([1.527525, 1.080123, 0.763763])
    sample = jax.jit(buffer.sample)
    for key in jax.random.split(jax.random.key(0), 10):
        indices, batch, weights = sample(state, key, 0.5)
        indices = np.asarray(indices)
        assert (indices < 3).all()
        np.testing.assert_array_equal(np.asarray(batch.reward), indices)
        expected = unnormalized[indices] / unnormalized[indices].max()
        np.testing.assert_allclose(np.asarray(weights), expected, rtol=1e-5)


BUFFER_40 = per.prioritized_replay(40, 16)
ADD_40 = {}  # jitted add per number of transitions
SAMPLE_40 = jax.jit(BUFFER_40.sample)


@pytest.mark.slow
@settings(max_examples=20, deadline=None)
@given(st.sampled_from([1, 2, 3, 7, 16, 39, 40]), st.integers(0, 2**31 - 1))
def test_sample_never_returns_an_empty_slot(filled, seed):
    add = ADD_40.setdefault(filled, jax.jit(BUFFER_40.add))
    state = add(BUFFER_40.init(example()), transitions(filled), None)
    indices, batch, weights = SAMPLE_40(state, jax.random.key(seed), 0.4)
    assert (np.asarray(indices) < filled).all()
    np.testing.assert_array_equal(np.asarray(batch.reward), np.asarray(indices))
    weights = np.asarray(weights)
    assert np.isfinite(weights).all() and (weights > 0).all() and weights.max() == 1.0


def test_sampling_frequencies_follow_priorities():
    buffer = per.prioritized_replay(16, 32, alpha=1.0, eps=1.0, priority_on_insert="td")
    abs_td = jnp.array([0.0, 1.0, 3.0, 0.0, 7.0, 2.0])  # priorities 1, 2, 4, 1, 8, 3
    state = buffer.add(buffer.init(example()), transitions(6), abs_td)
    keys = jax.random.split(jax.random.key(7), 300)
    indices = jax.jit(jax.vmap(lambda k: buffer.sample(state, k, 1.0)[0]))(keys)
    counts = np.bincount(np.asarray(indices).ravel(), minlength=16)
    assert counts[6:].sum() == 0  # empty slots
    priorities = np.array([1, 2, 4, 1, 8, 3], np.float64)
    expected = counts.sum() * priorities / priorities.sum()
    chi2 = (((counts[:6] - expected) ** 2) / expected).sum()
    # chi2.ppf(0.999, df=5) = 20.515; fixed seed, so deterministic.
    assert chi2 < 20.515, (counts[:6], expected)


def test_beta_can_be_traced_and_annealed():
    buffer = per.prioritized_replay(8, 4, alpha=1.0, eps=0.5, priority_on_insert="td")
    state = buffer.add(buffer.init(example()), transitions(3), jnp.array([0.5, 1.5, 3.5]))

    def step(carry, beta):
        _, _, weights = buffer.sample(state, jax.random.key(0), beta)
        return carry, weights.min()

    betas = jnp.linspace(0.4, 1.0, 4)  # the loop anneals beta0 -> 1
    _, smallest = jax.jit(lambda b: jax.lax.scan(step, 0, b))(betas)
    smallest = np.asarray(smallest)
    assert (np.diff(smallest) < 0).all()  # a larger beta corrects more: smaller weights


def test_vmap_over_seeds_matches_a_python_loop():
    buffer = per.prioritized_replay(6, 4, priority_on_insert="td")
    seeds = 3
    abs_td = jnp.arange(seeds * 8, dtype=jnp.float32).reshape(seeds, 8) % 5
    new_td = jnp.arange(seeds * 4, dtype=jnp.float32).reshape(seeds, 4) % 3
    keys = jax.random.split(jax.random.key(1), seeds)

    def run(td, new, key):
        state = buffer.add(buffer.init(example()), transitions(4), td[:4])
        state = buffer.add(state, transitions(4, start=4), td[4:])  # wraps around
        indices, _, weights = buffer.sample(state, key, 0.5)
        return buffer.update(state, indices, new), indices, weights

    batched = jax.jit(jax.vmap(run))(abs_td, new_td, keys)
    single = jax.jit(run)
    for s in range(seeds):
        one = single(abs_td[s], new_td[s], keys[s])
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(batched), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b[s]), rtol=1e-6)
