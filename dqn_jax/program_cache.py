"""Lowered programs kept on disk, so that a repeated run skips tracing as well as compiling.

JAX's persistent compilation cache saves XLA's compilation, but a run must still trace and
lower every program to find its cache entry, and for a small task that was most of a warm
start. :func:`lower` keeps each program's StableHLO (``jax.export``) under a key that covers
everything that could change what tracing produces: the program's name and argument shapes,
dtypes and shardings, the caller's own parts (the config), the devices, JAX's configuration,
``XLA_FLAGS``, the Python version and the path, size and modification time of the file of every
loaded module (this package, JAX, flax, gymnax, ...; an edited source file makes a new key).
The loaded program is then compiled as usual, which hits the compilation cache.

Only for programs that are a function of the key's parts alone: :func:`dqn_jax.run.train` uses
it for the agents it builds from a config, never for a trainer passed in (swapped networks,
heads or sweep tables are closures the key cannot see).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
from jax import export

FORMAT = 1
"""Bumped when what a cache file holds changes."""


def environment_fingerprint() -> str:
    """A hash of what tracing depends on besides a program's own inputs (see the module)."""
    files = []
    for module in list(sys.modules.values()):
        path = vars(module).get("__file__") if hasattr(module, "__dict__") else None
        if path:
            try:
                stat = os.stat(path)
            except OSError:
                continue
            files.append((path, stat.st_size, stat.st_mtime_ns))
    config = sorted((name, repr(value)) for name, value in jax.config.values.items())
    devices = [(d.platform, d.device_kind, d.id, d.process_index) for d in jax.devices()]
    parts = (FORMAT, sys.version, sorted(set(files)), config, devices, os.environ.get("XLA_FLAGS"))
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _spec(x) -> tuple:
    return (tuple(x.shape), str(x.dtype), repr(getattr(x, "sharding", None)))


class Program(NamedTuple):
    """A program lowered for flat arguments (the leaves of the caller's), with the pytree
    structures to call it with the caller's arguments and results."""

    lowered: jax.stages.Lowered
    in_tree: Any
    out_tree: Any

    @property
    def out_info(self):
        """The results' shapes, dtypes and shardings, in the caller's pytree."""
        return jax.tree.unflatten(self.out_tree, self.lowered.out_info)

    def compile(self) -> Callable:
        """The compiled program, called like the original function."""
        compiled = self.lowered.compile()
        in_tree, out_tree = self.in_tree, self.out_tree

        def call(*args):
            leaves, tree = jax.tree.flatten(args)
            if tree != in_tree:
                raise TypeError(f"called with {tree}, compiled for {in_tree}")
            return jax.tree.unflatten(out_tree, compiled(*leaves))

        return call


def lower(
    fn: Callable,
    args: Sequence,
    *,
    name: str,
    key_parts: Any,
    fingerprint: str,
    cache_dir: Path,
    donate_argnums: tuple[int, ...] = (),
) -> Program:
    """``jax.jit(fn, donate_argnums).lower(*args)`` as a :class:`Program`, loaded from
    ``cache_dir`` when a run with the same key (``name``, the arguments' shapes, ``key_parts``
    and ``fingerprint``) saved it, else traced, lowered and saved there. ``args`` are arrays or
    ``jax.ShapeDtypeStruct`` (with their shardings). ``fingerprint``:
    :func:`environment_fingerprint`, taken once before the run traces anything (tracing
    imports modules, and the key must not depend on whether it ran)."""
    leaves, in_tree = jax.tree.flatten(tuple(args))
    counts = [len(jax.tree.leaves(a)) for a in args]
    starts = [sum(counts[:i]) for i in range(len(args))]
    donated = tuple(starts[i] + j for i in donate_argnums for j in range(counts[i]))
    key = hashlib.sha256(
        repr((name, str(in_tree), [_spec(x) for x in leaves], key_parts)).encode()
        + fingerprint.encode()
    ).hexdigest()
    path = Path(cache_dir) / f"{name}-{key[:40]}.program"
    exported, out_tree = None, None
    try:
        saved_tree, blob = pickle.loads(path.read_bytes())
        exported, out_tree = export.deserialize(bytearray(blob)), saved_tree
    except Exception:  # noqa: BLE001 - absent or unreadable in any way (a truncated write, a
        pass  # format of another jax): traced again below, and rewritten
    if exported is None:
        out = []

        def flat(*xs):
            result = fn(*jax.tree.unflatten(in_tree, xs))
            leaves_out, tree = jax.tree.flatten(result)
            out.append(tree)
            return leaves_out

        exported = export.export(jax.jit(flat))(*leaves)
        out_tree = out[0]
        _write_atomically(path, pickle.dumps((out_tree, exported.serialize())))
    lowered = jax.jit(exported.call, donate_argnums=donated).lower(*leaves)
    return Program(lowered, in_tree, out_tree)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
