"""Multi-host runs: one program over the devices of several processes (``jax.distributed``).

Every process runs the same driver (:func:`dqn_jax.run.train`) on the same config. The seed
axis is sharded over ``jax.devices()``, every process's devices, so each process computes its
own shards' seeds; at each chunk boundary every process gathers all seeds' episodes and
statistics (:func:`to_host`), so all of them take the same decisions (stop on a NaN, on
Ctrl-C), and process 0 alone writes the run directory's files. Checkpoints are written by
every process, each its own shards, through orbax's multi-process support.

With one process (no :func:`initialize`) every function here is the single-process operation.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def initialize(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Join the run's processes with ``jax.distributed.initialize``: before any JAX computation.

    Values left ``None`` are read by JAX from the cluster's environment (SLURM, Open MPI, ...).
    On CPUs the processes' collectives go through gloo. Does nothing in a process that joined.
    """
    if jax.distributed.is_initialized():
        return
    if jax.config.jax_cpu_collectives_implementation in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id)


def is_main() -> bool:
    """Whether this process writes the run directory's files (process 0, or the only one)."""
    return jax.process_index() == 0


def to_host(tree: Any) -> Any:
    """``tree``'s arrays as NumPy arrays holding every process's shards (each process gets all)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true in any process (all processes get the same answer)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name``."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def check_layout(num_seeds: int, devices: list) -> None:
    """Refuse a multi-process run whose runs do not divide evenly over all its ``devices``:
    every process must hold shards of the seed axis."""
    if jax.process_count() > 1 and num_seeds % len(devices):
        raise SystemExit(
            f"error: {num_seeds} runs do not divide evenly over the {len(devices)} devices of "
            f"{jax.process_count()} processes: choose --num-seeds (times the grid points of a "
            f"sweep) a multiple of {len(devices)}"
        )
