"""Random numbers without XLA:CPU's rolled threefry loop, bit for bit ``jax.random``'s.

On a CPU, jax lowers each threefry call to a ``while`` loop of 5 iterations of several small
XLA operations; in the host loop's per-iteration program and in the sum tree's sampling that
loop cost more than the rest of the work (measured: 1.5 against 0.2 us per stratified sample
in :mod:`dqn_jax.sumtree`). :func:`bits` and :func:`uniform` compute the same numbers as
``jax.random.bits`` / ``jax.random.uniform`` with the 20 rounds written out as elementwise
operations (one small fusion); keys of another kind, or a JAX configured without
partitionable threefry, fall back to ``jax.random`` itself. ``tests/test_sumtree.py`` checks
the numbers bit for bit.

The draws this module does not make (flax's parameter init, gymnax's resets) go through jax's
``threefry2x32`` primitive. Importing this module gives that primitive its own CPU lowering,
with the same bits in any program of the process: a rolled loop like jax's, except inside
:func:`unrolled_threefry`, where the rounds are unrolled. :mod:`dqn_jax.run` lowers its init
and evaluation programs there, where the rolled loops made most of the compile time. Not the
training chunk: XLA copies an unrolled hash into every fusion that reads its numbers, and a
chunk with many draws (noisy nets) compiled slower; nor the host loop's init, which also
acts. ``tests/test_rng.py`` checks both lowerings against a NumPy Threefry and Random123's
published test vectors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import threefry2x32_p
from jax.interpreters import mlir

# Threefry-2x32 (Salmon et al., 2011), as jax.random implements it: rotations and key schedule.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)


# The rounds are written with lax primitives, not jnp operators: each jnp operator is a
# small jitted function that costs a nested trace, and a program's hashes have ~1,000 of them.


def _rotate_left(x: jax.Array, bits) -> jax.Array:
    """``x`` (``u32``) rotated left by ``bits`` (a ``u32`` constant or traced scalar)."""
    rest = np.uint32(32 - bits) if isinstance(bits, np.integer) else lax.sub(np.uint32(32), bits)
    right = lax.shift_right_logical(x, rest)
    return lax.bitwise_or(lax.shift_left(x, bits), right)


def _block(x0, x1, rotations, k_next, k_after, number):
    """One block of Threefry-2x32: 4 rounds with ``rotations``, then key injection
    ``number`` (1..5)."""
    for r in rotations:
        x0 = lax.add(x0, x1)
        x1 = lax.bitwise_xor(_rotate_left(x1, r), x0)
    return lax.add(x0, k_next), lax.add(lax.add(x1, k_after), number)


def threefry_rounds(k0, k1, x0, x1, rolled: bool = False) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32's 20 rounds with key ``(k0, k1)`` on counters ``(x0, x1)``: the pair of
    ``u32`` words, shapes broadcast (jax's ``threefry2x32`` primitive). Unrolled: plain
    elementwise operations; ``rolled``: a ``fori_loop`` over the 5 blocks of 4 rounds, as jax
    lowers it on CPU."""
    keys = (k0, k1, lax.bitwise_xor(lax.bitwise_xor(k0, k1), _KEY_PARITY))
    x0, x1 = lax.add(x0, keys[0]), lax.add(x1, keys[1])
    if rolled:
        keys = jnp.stack(jnp.broadcast_arrays(*keys))
        rotations = jnp.asarray(_ROTATIONS, jnp.uint32)

        def block(i, x):
            number = (i + 1).astype(jnp.uint32)
            return _block(*x, rotations[i % 2], keys[(i + 1) % 3], keys[(i + 2) % 3], number)

        return jax.lax.fori_loop(0, 5, block, (x0, x1))
    for i in range(5):
        rotations = [np.uint32(r) for r in _ROTATIONS[i % 2]]
        x0, x1 = _block(x0, x1, rotations, keys[(i + 1) % 3], keys[(i + 2) % 3], np.uint32(i + 1))
    return x0, x1


def _threefry_pair(key_data: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """``(u32[n], u32[n])``: jax's ``threefry2x32`` of key ``key_data u32[2]`` on the 64-bit
    counters ``0 .. n-1`` (partitionable counters, JAX's default), unrolled: one small fusion
    where jax's CPU lowering is a rolled ``while`` loop of 5 iterations."""
    return threefry_rounds(
        key_data[0], key_data[1], jnp.zeros((n,), jnp.uint32), jnp.arange(n, dtype=jnp.uint32)
    )


_unrolled_depth = 0


@contextlib.contextmanager
def unrolled_threefry() -> Iterator[None]:
    """While open, programs lowered for the CPU compute jax's ``threefry2x32`` with
    :func:`threefry_rounds` unrolled instead of a rolled loop: the same bits, a program that
    compiles faster when its random numbers are each read once (an init, an evaluation)."""
    global _unrolled_depth
    _unrolled_depth += 1
    try:
        yield
    finally:
        _unrolled_depth -= 1


def _cpu_lowering(ctx, *args):
    rolled = _unrolled_depth == 0
    hashed = lambda *a: list(threefry_rounds(*a, rolled=rolled))  # noqa: E731
    return mlir.lower_fun(hashed, multiple_results=True)(ctx, *args)


mlir.register_lowering(threefry2x32_p, _cpu_lowering, platform="cpu")


def _raw_threefry_key(key: jax.Array) -> jax.Array | None:
    """The ``u32[2]`` data of a threefry key under partitionable counters, else ``None``."""
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    data = jax.random.key_data(key) if typed else key
    threefry = (
        data.shape == (2,)
        and data.dtype == jnp.uint32
        and (not typed or "threefry" in str(jax.random.key_impl(key)))
        and jax.config.jax_threefry_partitionable
    )
    return data if threefry else None


def bits(key: jax.Array, n: int) -> jax.Array:
    """``u32[n]``: exactly ``jax.random.bits(key, (n,), jnp.uint32)``."""
    data = _raw_threefry_key(key)
    if data is None:
        return jax.random.bits(key, (n,), jnp.uint32)
    x0, x1 = _threefry_pair(data, n)
    return x0 ^ x1


def _unit_floats(words: jax.Array) -> jax.Array:
    """``f32`` in ``[0, 1)`` from ``u32`` words, as ``jax.random.uniform`` converts them: 23
    random mantissa bits under exponent 0, minus 1."""
    one_to_two = (words >> np.uint32(9)) | np.uint32(0x3F800000)
    return jax.lax.bitcast_convert_type(one_to_two, jnp.float32) - 1.0


def uniform(key: jax.Array, n: int) -> jax.Array:
    """``f32[n]`` in ``[0, 1)``: exactly ``jax.random.uniform(key, (n,))``."""
    if _raw_threefry_key(key) is None:
        return jax.random.uniform(key, (n,), jnp.float32)
    return _unit_floats(bits(key, n))


def split(key: jax.Array, n: int = 2) -> jax.Array:
    """``n`` keys: exactly ``jax.random.split(key, n)`` (raw ``u32[n, 2]`` for a raw key)."""
    data = _raw_threefry_key(key)
    if data is None or jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.split(key, n)
    return jnp.stack(_threefry_pair(data, n), axis=-1)


def randint(key: jax.Array, n: int, maxval: jax.Array) -> jax.Array:
    """``i32[n]`` in ``[0, maxval)``: exactly ``jax.random.randint(key, (n,), 0, maxval)``
    (``maxval`` an ``int32`` scalar, may be traced; ``maxval <= 0`` gives zeros).

    jax's method: two 32-bit words per value, combined modulo ``maxval``, so the bias of a
    non-power-of-two range is about ``maxval**2 / 2**64`` (nil for any buffer size).
    """
    data = _raw_threefry_key(key)
    if data is None:
        return jax.random.randint(key, (n,), 0, maxval)
    maxval = jnp.asarray(maxval, jnp.int32)
    k1, k2 = _threefry_pair(data, 2)  # jax.random.split(key): keys (k1[i], k2[i])
    higher, lower = bits(jnp.stack([k1[0], k2[0]]), n), bits(jnp.stack([k1[1], k2[1]]), n)
    span = jnp.where(maxval <= 0, 1, maxval).astype(jnp.uint32)
    multiplier = jnp.uint32(2**16) % span
    multiplier = (multiplier * multiplier) % span  # 2**32 mod span
    offset = ((higher % span) * multiplier + lower % span) % span
    return offset.astype(jnp.int32)
