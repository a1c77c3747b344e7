"""The CPU lowerings of jax's threefry that ``dqn_jax.rng`` installs (rolled by default, unrolled
inside ``rng.unrolled_threefry()``), against a NumPy Threefry."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.extend.random import threefry_2x32

from dqn_jax import rng  # importing it installs the lowering

U32 = st.integers(0, 2**32 - 1)


def numpy_threefry2x32(key: tuple[int, int], x0: np.ndarray, x1: np.ndarray):
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011, Random123's ``threefry2x32``), in
    uint32 NumPy arithmetic, written from the paper's description."""
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    with np.errstate(over="ignore"):
        ks = [np.uint32(key[0]), np.uint32(key[1])]
        ks.append(ks[0] ^ ks[1] ^ np.uint32(0x1BD11BDA))
        x0, x1 = x0.astype(np.uint32) + ks[0], x1.astype(np.uint32) + ks[1]
        for block in range(5):
            for r in rotations[block % 2]:
                x0 = x0 + x1
                x1 = ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))) ^ x0
            x0 = x0 + ks[(block + 1) % 3]
            x1 = x1 + ks[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1


LOWERINGS = {"rolled": contextlib.nullcontext, "unrolled": rng.unrolled_threefry}


def jitted_threefry(key, x0: np.ndarray, x1: np.ndarray, lowering: str) -> np.ndarray:
    count = jnp.asarray(np.stack([x0, x1]).astype(np.uint32))
    with LOWERINGS[lowering]():  # a fresh jit: lowered here, under this lowering
        hashed = jax.jit(lambda k, c: threefry_2x32(k, c))
        return np.asarray(hashed(jnp.asarray(key, jnp.uint32), count))


@pytest.mark.parametrize("lowering", sorted(LOWERINGS))
def test_the_lowering_gives_random123s_known_answers(lowering):
    # Random123's kat_vectors for threefry2x32_20: (key, counter) -> output.
    cases = [
        ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF,) * 2, (0xFFFFFFFF,) * 2, (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ]
    for key, counter, expected in cases:
        got = jitted_threefry(key, np.array([counter[0]]), np.array([counter[1]]), lowering)
        assert [int(v) for v in got.ravel()] == list(expected)
        reference = numpy_threefry2x32(key, np.array([counter[0]]), np.array([counter[1]]))
        assert [int(v[0]) for v in reference] == list(expected)


@settings(max_examples=20, deadline=None)
@given(key=st.tuples(U32, U32), counters=st.lists(st.tuples(U32, U32), min_size=1, max_size=9))
def test_both_lowerings_are_threefry_for_any_key_and_counters(key, counters):
    x0, x1 = (np.array(c, np.uint64).astype(np.uint32) for c in zip(*counters, strict=True))
    expected = np.stack(numpy_threefry2x32(key, x0, x1))
    for lowering in LOWERINGS:
        np.testing.assert_array_equal(jitted_threefry(key, x0, x1, lowering), expected)


def test_jax_random_compiles_without_a_loop_only_inside_unrolled_threefry():
    key = jax.random.key(42)

    def program(n):  # a new shape each time: lowered afresh
        return jax.jit(lambda k: jax.random.bits(k, (n,))).lower(key).compile().as_text()

    with rng.unrolled_threefry():
        assert "while" not in program(5)
    assert "while" in program(6)
    # jax.random.bits with partitionable counters: word i is the xor of the pair at counter i.
    data = np.asarray(jax.random.key_data(key))
    x0, x1 = numpy_threefry2x32(tuple(int(v) for v in data), np.zeros(5), np.arange(5))
    with rng.unrolled_threefry():
        np.testing.assert_array_equal(np.asarray(jax.random.bits(key, (5,))), x0 ^ x1)


def test_randint_with_a_traced_bound_stays_in_range_and_gives_zeros_for_an_empty_one():
    # The replay samples with its current size as a traced bound, which is 0 before any store.
    draw = jax.jit(rng.randint, static_argnums=1)
    for maxval in (1, 3, 1000, 2**31 - 1):
        values = np.asarray(draw(jax.random.key(maxval), 256, jnp.int32(maxval)))
        assert values.dtype == np.int32 and values.min() >= 0 and values.max() < maxval
    assert len(np.unique(np.asarray(draw(jax.random.key(0), 256, jnp.int32(1000))))) > 200
    np.testing.assert_array_equal(draw(jax.random.key(0), 8, jnp.int32(0)), np.zeros(8))
