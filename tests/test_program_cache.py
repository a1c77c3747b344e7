"""dqn_jax.program_cache: lowered programs saved and loaded, keyed by what tracing depends on."""

import importlib
import os
import pickle
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dqn_jax import program_cache


class Pair(NamedTuple):
    a: jax.Array
    b: jax.Array | None


TRACES = []


def step(pair: Pair, scale):
    TRACES.append(1)  # runs only when traced
    return Pair(pair.a * scale + 1.0, None), {"sum": jnp.sum(pair.a) * scale}


def lower(tmp_path, args, key_parts="config", fingerprint="env", donate=()):
    return program_cache.lower(
        step,
        args,
        name="step",
        key_parts=key_parts,
        fingerprint=fingerprint,
        cache_dir=tmp_path,
        donate_argnums=donate,
    )


def test_a_saved_program_loads_without_tracing_and_computes_what_jit_does(tmp_path):
    pair, scale = Pair(jnp.arange(6.0).reshape(2, 3), None), jnp.float32(3.0)
    expected = jax.jit(step)(pair, scale)
    TRACES.clear()
    first = lower(tmp_path, (pair, scale))
    assert len(TRACES) == 1 and len(list(tmp_path.glob("step-*.program"))) == 1
    again = lower(tmp_path, (pair, scale))
    assert len(TRACES) == 1  # loaded, not traced
    for program in (first, again):
        out = program.compile()(pair, scale)
        assert jax.tree.structure(out) == jax.tree.structure(expected)
        np.testing.assert_array_equal(out[0].a, expected[0].a)
        np.testing.assert_array_equal(out[1]["sum"], expected[1]["sum"])
        assert out[0].b is None
        shapes = program.out_info
        assert shapes[0].a.shape == (2, 3) and shapes[1]["sum"].dtype == jnp.float32


def test_donated_arguments_are_consumed(tmp_path):
    pair = Pair(jnp.ones((4,)), None)
    program = lower(tmp_path, (pair, jnp.float32(2.0)), donate=(0,)).compile()
    out, _ = program(pair, jnp.float32(2.0))
    assert pair.a.is_deleted() and float(out.a[0]) == 3.0


@pytest.mark.parametrize(
    "change",
    [
        dict(key_parts="another config"),
        dict(fingerprint="another environment"),
        dict(args=(Pair(jnp.zeros((2, 4)), None), jnp.float32(1.0))),  # another shape
        dict(args=(Pair(jnp.zeros((2, 3), jnp.int32), None), jnp.int32(1))),  # another dtype
        dict(args=(Pair(jnp.zeros((2, 3)), jnp.zeros(())), jnp.float32(1.0))),  # another tree
    ],
)
def test_any_change_in_the_key_traces_again(tmp_path, change):
    base = dict(args=(Pair(jnp.zeros((2, 3)), None), jnp.float32(1.0)))
    lower(tmp_path, **base)
    TRACES.clear()
    lower(tmp_path, **{**base, **change})
    assert len(TRACES) == 1
    assert len(list(tmp_path.glob("step-*.program"))) == 2


@pytest.mark.parametrize(
    "damage",
    [b"not a program", pickle.dumps((jax.tree.structure(1), b"not an exported program"))],
)
def test_an_unreadable_file_is_traced_again_and_rewritten(tmp_path, damage):
    args = (Pair(jnp.arange(3.0), None), jnp.float32(2.0))
    lower(tmp_path, args)
    (path,) = tmp_path.glob("step-*.program")
    path.write_bytes(damage)
    TRACES.clear()
    out, _ = lower(tmp_path, args).compile()(*args)
    assert len(TRACES) == 1 and path.read_bytes() != damage
    np.testing.assert_array_equal(out.a, [1.0, 3.0, 5.0])


def test_a_call_with_another_structure_is_refused(tmp_path):
    program = lower(tmp_path, (Pair(jnp.zeros(2), None), jnp.float32(1.0))).compile()
    with pytest.raises(TypeError, match="compiled for"):
        program(Pair(jnp.zeros(2), jnp.zeros(2)), jnp.float32(1.0))


def test_the_fingerprint_follows_an_edited_module_and_leaves_lazy_modules_alone(tmp_path):
    (tmp_path / "edited_module.py").write_text("X = 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module("edited_module")
        before = program_cache.environment_fingerprint()
        assert program_cache.environment_fingerprint() == before
        stat = os.stat(tmp_path / "edited_module.py")
        os.utime(tmp_path / "edited_module.py", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        assert program_cache.environment_fingerprint() != before
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("edited_module", None)

    class Lazy(type(sys)):
        def __getattr__(self, name):
            raise AssertionError(f"the fingerprint asked a lazy module for {name}")

    sys.modules["lazy_module"] = Lazy("lazy_module")
    try:
        program_cache.environment_fingerprint()
    finally:
        sys.modules.pop("lazy_module")
