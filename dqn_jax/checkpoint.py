"""Checkpoints of a run: the device train state plus a small JSON host state, with orbax.

A checkpoint is ``RUN_DIR/checkpoints/<env_step>/`` holding two items:

- ``state``: the train state pytree (any pytree of arrays: for the JAX backend the
  :class:`~dqn_jax.device_loop.TrainState` with its leading seed axis), restored onto the
  shardings of an abstract target so a resumed run continues on the same devices.
- ``host``: a JSON dict (chunk and iteration index, episodes so far, evaluations so far, ...).

Writes are atomic: orbax writes into a temporary directory and renames it when complete, so a
process killed mid-save leaves the previous checkpoint intact and the partial one invisible.

Nothing here knows about the training loop, so any backend can use it: the gymnasium backend
can checkpoint its device state (parameters, optimizer, replay) the same way, but its
environments are Python objects whose state cannot be saved, so a resumed gymnasium run starts
new episodes and is not bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"
SET_ASIDE_DIR = "checkpoints_set_aside"
DEFAULT_KEEP = 3
# Room left on the disk beyond the checkpoints themselves (logs, plots, orbax metadata).
FREE_SPACE_MARGIN = 64 * 2**20


class CheckpointError(RuntimeError):
    """No usable checkpoint: none saved, all unreadable, or not the shape the run expects."""


class Restored(NamedTuple):
    step: int  # the checkpoint's step (env steps per seed for the training loops)
    state: Any  # the restored state pytree, placed like the abstract target
    host: dict  # the JSON host state saved with it


def checkpoint_dir(run_dir: str | Path) -> Path:
    """Where the checkpoints of ``run_dir`` live."""
    return Path(run_dir) / CHECKPOINT_DIR


def saved_steps(run_dir: str | Path) -> list[int]:
    """Steps of the complete checkpoints in ``run_dir``, oldest first (temporary dirs ignored)."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def open_manager(
    run_dir: str | Path, keep: int = DEFAULT_KEEP, read_only: bool = False
) -> ocp.CheckpointManager:
    """A synchronous orbax manager over ``RUN_DIR/checkpoints`` that keeps the last ``keep``
    (``read_only``: for restoring only; it creates, cleans and deletes nothing).

    Saving is synchronous on purpose: the train state is donated to the next chunk, so its
    buffers must not be read by a background writer after ``save`` returns.
    """
    # read_only=True makes orbax log warnings; a manager that never saves or creates is enough.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep,
        enable_async_checkpointing=False,
        create=not read_only,
        cleanup_tmp_directories=not read_only,
    )
    handlers = {"state": ocp.StandardCheckpointHandler(), "host": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(
        checkpoint_dir(run_dir).absolute(), options=options, item_handlers=handlers
    )


def save(manager: ocp.CheckpointManager, step: int, state: Any, host: dict) -> Path:
    """Write ``state`` and ``host`` as checkpoint ``step``, atomically; return its directory.

    Raises :class:`CheckpointError` if orbax declines (a checkpoint at ``step`` or later exists).
    """
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(host))
    if not manager.save(step, args=args):
        raise CheckpointError(
            f"checkpoint {step} was not written: {manager.directory} already holds step "
            f"{manager.latest_step()}"
        )
    manager.wait_until_finished()
    return Path(manager.directory) / str(step)


def abstract_state(state_shapes: Any, sharding) -> Any:
    """``jax.ShapeDtypeStruct`` leaves with ``sharding``: the restore target of a state."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state_shapes
    )


def estimate_bytes(state_shapes: Any) -> int:
    """Bytes of the arrays of one checkpoint of a state with these shapes (uncompressed)."""
    return int(
        sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(state_shapes))
    )


def free_bytes(path: str | Path) -> int:
    """Free bytes on the filesystem holding ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def check_free_space(run_dir: str | Path, checkpoint_bytes: int, keep: int) -> None:
    """Raise :class:`OSError` (ENOSPC) unless the disk can hold ``keep + 1`` checkpoints.

    ``keep + 1``: orbax writes the new checkpoint before it deletes the oldest.
    """
    import errno

    needed = checkpoint_bytes * (keep + 1) + FREE_SPACE_MARGIN
    free = free_bytes(run_dir)
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"not enough free disk space for checkpoints in {run_dir}: {free / 2**20:,.0f} MiB "
            f"free, {needed / 2**20:,.0f} MiB needed ({keep + 1} checkpoints of "
            f"~{checkpoint_bytes / 2**20:,.1f} MiB + margin)",
        )


def _leaf_name(path) -> str:
    parts = []
    for key in path:
        for attr in ("name", "key", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return ".".join(parts)


def _shapes_by_name(tree: Any) -> dict[str, tuple]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_leaf_name(p): (tuple(x.shape), np.dtype(x.dtype).name) for p, x in leaves}


def shape_mismatch(manager: ocp.CheckpointManager, step: int, target: Any) -> str:
    """'' if checkpoint ``step`` holds arrays of the target's names, shapes and dtypes, else a
    description of the first differences. Raises if the metadata itself is unreadable."""
    meta = manager.item_metadata(step)["state"]
    saved = {x.name: (tuple(x.shape), np.dtype(x.dtype).name) for x in jax.tree.leaves(meta)}
    wanted = _shapes_by_name(target)
    diffs = [
        f"{name}: saved {saved.get(name, 'absent')}, expected {wanted.get(name, 'absent')}"
        for name in sorted(set(saved) | set(wanted))
        if saved.get(name) != wanted.get(name)
    ]
    return "; ".join(diffs[:4]) + (f"; ... ({len(diffs)} in all)" if len(diffs) > 4 else "")


def restore_step(manager: ocp.CheckpointManager, step: int, target: Any) -> Restored:
    """Checkpoint ``step`` restored onto ``target`` (abstract state); raises on any problem.

    A shape mismatch (a different config, not a damaged file) raises :class:`CheckpointError`.
    """
    mismatch = shape_mismatch(manager, step, target)
    if mismatch:
        raise CheckpointError(
            f"checkpoint {step} in {manager.directory} does not fit this config's train state "
            f"({mismatch})"
        )
    args = ocp.args.Composite(state=ocp.args.StandardRestore(target), host=ocp.args.JsonRestore())
    out = manager.restore(step, args=args)
    return Restored(step, out.state, dict(out.host))


@contextlib.contextmanager
def _quiet_absl():
    import logging

    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def restore(
    run_dir: str | Path,
    target: Any,
    step: int | None = None,
    *,
    manager: ocp.CheckpointManager | None = None,
    echo: Callable[[str], Any] = print,
) -> Restored:
    """Restore checkpoint ``step`` of ``run_dir`` (default: the latest that can be read).

    Without ``step``, a damaged checkpoint is reported through ``echo`` and the previous one is
    tried, down to the oldest. Raises :class:`CheckpointError` when nothing can be restored (or
    ``step`` was asked for and is missing or damaged).
    """
    with _quiet_absl():
        manager = manager or open_manager(run_dir, read_only=True)
    steps = saved_steps(run_dir)
    if step is not None:
        if step not in steps:
            raise CheckpointError(
                f"no checkpoint {step} in {checkpoint_dir(run_dir)} "
                f"(saved: {', '.join(map(str, steps)) or 'none'})"
            )
        steps = [step]
    if not steps:
        raise CheckpointError(f"no checkpoint in {checkpoint_dir(run_dir)}")
    errors = []
    for s in reversed(steps):
        try:
            with _quiet_absl():  # orbax logs a damaged file's contents; the warning below says it
                restored = restore_step(manager, s, target)
        except CheckpointError:
            raise
        except Exception as err:  # noqa: BLE001 - any read error means a damaged checkpoint
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            errors.append(f"checkpoint {s} is damaged ({reason[:300]})")
            echo(f"warning: {errors[-1]}")
            continue
        if errors:
            echo(f"falling back to checkpoint {s} in {checkpoint_dir(run_dir)}")
        return restored
    raise CheckpointError(
        f"no restorable checkpoint in {checkpoint_dir(run_dir)}: " + "; ".join(errors)
    )


def set_aside_after(run_dir: str | Path, step: int) -> list[Path]:
    """Move the checkpoints later than ``step`` (damaged ones a resume skipped) out of the
    manager's way, to ``RUN_DIR/checkpoints_set_aside/``, so new saves can follow ``step``.

    Nothing is deleted. Returns the new locations.
    """
    moved = []
    aside = Path(run_dir) / SET_ASIDE_DIR
    for s in saved_steps(run_dir):
        if s > step:
            aside.mkdir(exist_ok=True)
            dest = aside / str(s)
            n = 1
            while dest.exists():
                dest, n = aside / f"{s}.{n}", n + 1
            shutil.move(str(checkpoint_dir(run_dir) / str(s)), dest)
            moved.append(dest)
    return moved
