"""The host side of a run: compile, run the chunks, report between them, write the run directory.

``train(config, run_dir)`` is what the CLI calls. All seeds run in one compiled program:
``jit(vmap(run_chunk))`` (:func:`dqn_jax.device_loop.run_chunk_of_seeds`) with the seed axis
first and the train state donated.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import json
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dqn_jax import checkpoint as ckpt
from dqn_jax import distributed, report, rng
from dqn_jax import program_cache as program_cache_lib
from dqn_jax.agent import EVAL_STREAM
from dqn_jax.config import Config, config_diff, load_run_config
from dqn_jax.device_loop import Trainer, TrainState, make_train, run_chunk_of_seeds
from dqn_jax.report import NonFiniteError, RunResult, chunk_sizes
from dqn_jax.sweep import saved_sweep

__all__ = ["NonFiniteError", "RunResult", "train", "evaluate_checkpoint"]


def run_seeds(config: Config, seeds_per_point: int | None = None) -> np.ndarray:
    """``int[num_seeds]``: the seed of each run: ``seed + i % seeds_per_point`` for run ``i``
    (in a sweep every grid point sees the same seeds); ``None`` (a plain run): ``seed + i``."""
    return config.seed + np.arange(config.num_seeds) % (seeds_per_point or config.num_seeds)


def seed_keys(config: Config, seeds_per_point: int | None = None) -> jax.Array:
    """One PRNG key per run: ``PRNGKey`` of its seed (:func:`run_seeds`)."""
    seeds = jnp.asarray(run_seeds(config, seeds_per_point), dtype=jnp.uint32)
    return jax.vmap(jax.random.PRNGKey)(seeds)


def run_indices(config: Config) -> jax.Array:
    """``i32[num_seeds]``: the index of each run (selects its sweep values, if any)."""
    return jnp.arange(config.num_seeds, dtype=jnp.int32)


def eval_keys(config: Config, seeds_per_point: int | None = None) -> jax.Array:
    """Evaluation keys, independent of the training keys (evaluating never changes training)
    and, like them, a function of the run's seed only (a seed at two grid points of a sweep is
    evaluated on the same start states)."""
    keys = seed_keys(config, seeds_per_point)
    return jax.vmap(lambda k: jax.random.fold_in(k, EVAL_STREAM))(keys)


@jax.jit
def _finite_per_seed(params) -> jax.Array:
    leaves = jax.tree.leaves(params)
    per_leaf = [jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1) for x in leaves]
    return jnp.stack(per_leaf).all(0)


def params_finite(compiled: Compiled, state: TrainState) -> np.ndarray:
    """``bool[seeds]``: whether every parameter of each seed is finite (one program compiled
    with the run's, not an eager dispatch per leaf after every chunk)."""
    return distributed.to_host(compiled.finite(state.agent.learner.params))


class Compiled(NamedTuple):
    init: Callable
    prefill: Callable | None
    chunks: dict[int, Callable]
    evaluate: Callable | None
    seconds: float
    sharding: NamedSharding  # of every array with a leading seed axis
    eval_keys: jax.Array | None  # of every run (eval_keys), on the sharding; None without eval
    finite: Callable  # params -> bool[seeds] (_finite_per_seed)


def seed_sharding(num_seeds: int, devices: list | None = None) -> NamedSharding:
    """Shard the leading seed axis over the most devices that divide ``num_seeds`` evenly.

    One CPU, N CPU devices (``--xla_force_host_platform_device_count``), several GPUs or the
    devices of several processes: the same program, each device running its share of the seeds;
    seeds never communicate. Several processes must split the seeds evenly over all devices.
    """
    devices = list(devices or jax.devices())
    distributed.check_layout(num_seeds, devices)
    n = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
    return NamedSharding(Mesh(np.array(devices[:n]), ("seed",)), PartitionSpec("seed"))


def per_device(fn: Callable, shard: NamedSharding, num_args: int, replicated_args=()) -> Callable:
    """``fn`` (vmapped over seeds) run by each device on its own seeds with ``shard_map``.

    Each device runs the single-device program on its share of the seeds (GSPMD's automatic
    partitioning of the same program was measured here to change float rounding). A sharded run
    is then bit-identical to the unsharded one for most agents; where XLA compiles a smaller
    per-device batch differently (the pseudo-Huber loss, a swept Rainbow) they agree to float
    rounding. Both cases are tested.
    """
    specs = tuple(
        PartitionSpec() if i in replicated_args else PartitionSpec("seed") for i in range(num_args)
    )
    return jax.shard_map(
        fn, mesh=shard.mesh, in_specs=specs, out_specs=PartitionSpec("seed"), check_vma=False
    )


def compile_all(
    trainer: Trainer,
    sizes: list[int],
    devices: list | None = None,
    program_cache: str | Path | None = None,
) -> Compiled:
    """AOT-compile every program of the run with the seed axis sharded over ``devices``
    (default: all), timed so that compile and run time are reported apart.

    Each program is handed to XLA (a compile, or a load from the persistent cache) in a worker
    thread as soon as it is lowered, so that tracing and lowering the next program in Python
    overlaps XLA's work on the last one (XLA releases the GIL). ``program_cache``: a directory
    of lowered programs (:mod:`dqn_jax.program_cache`) for a trainer built from its config
    alone; a repeated run then loads them instead of tracing them (one process only)."""
    config = trainer.config
    shard = seed_sharding(config.num_seeds, devices)
    keys = jax.device_put(seed_keys(config, trainer.seeds_per_point), shard)
    start = time.perf_counter()
    indices = jax.device_put(run_indices(config), shard)
    lower = _lowering(config, program_cache)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        with rng.unrolled_threefry():  # see dqn_jax.rng: an init's draws are each read once
            init = lower("init", per_device(jax.vmap(trainer.init), shard, 2), (keys, indices))
        state_shape = jax.tree.map(  # the lowered init's outputs: no second trace of init
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shard), init.out_info
        )
        init = pool.submit(init.compile)
        finite = pool.submit(_finite_per_seed.lower(state_shape.agent.learner.params).compile)
        prefill = None
        if config.prefill_episodes > 0 and config.variant != "random":
            # Seeds one after another (lax.map), not vmapped: the prefill is a while loop over
            # a per-seed episode count, and a batched predicate would turn every iteration into
            # a select over the whole replay buffer (measured: ~30x slower).
            each_seed = lambda s: jax.lax.map(trainer.prefill, s)  # noqa: E731
            prefill = lower("prefill", per_device(each_seed, shard, 1), (state_shape,), (0,))
            prefill = pool.submit(prefill.compile)
        chunks = {}
        for n in sorted(set(sizes)):
            chunk = lambda s, it, n=n: run_chunk_of_seeds(trainer, s, it, n)  # noqa: E731
            fn = per_device(chunk, shard, 2, replicated_args=(1,))
            chunks[n] = pool.submit(
                lower(f"chunk{n}", fn, (state_shape, jnp.int32(0)), (0,)).compile
            )
        evaluate = ekeys = None
        if config.eval_episodes > 0:
            ekeys = jax.device_put(eval_keys(config, trainer.seeds_per_point), shard)
            params = state_shape.agent.learner.params
            evaluate = pool.submit(lower_evaluate(trainer, shard, params, ekeys, lower).compile)
        init, chunks = init.result(), {n: f.result() for n, f in chunks.items()}
        prefill = prefill.result() if prefill is not None else None
        evaluate = evaluate.result() if evaluate is not None else None
        finite = finite.result()
    seconds = time.perf_counter() - start
    return Compiled(init, prefill, chunks, evaluate, seconds, shard, ekeys, finite)


def _lowering(config: Config, program_cache: str | Path | None) -> Callable:
    """``lower(name, fn, args, donate_argnums=()) -> Lowered-like``: ``jax.jit`` and lower, or
    through ``program_cache`` (:func:`dqn_jax.program_cache.lower`) where there is one."""
    if program_cache is None or jax.process_count() > 1:
        return lambda name, fn, args, donate=(): jax.jit(fn, donate_argnums=donate).lower(*args)
    fingerprint = program_cache_lib.environment_fingerprint()
    key_parts = json.dumps(config.to_dict(), sort_keys=True)

    def lower(name, fn, args, donate=()):
        return program_cache_lib.lower(
            fn,
            args,
            name=name,
            key_parts=key_parts,
            fingerprint=fingerprint,
            cache_dir=Path(program_cache),
            donate_argnums=donate,
        )

    return lower


def lower_evaluate(
    trainer: Trainer, shard: NamedSharding, params, keys: jax.Array, lower: Callable | None = None
):
    """The greedy evaluation of every run, ``(params, keys) -> f32[runs, episodes]``, lowered
    for ``params`` (arrays or shapes) and ``keys`` sharded by ``shard`` (by ``lower``, from
    :func:`_lowering`; default: plain ``jax.jit``)."""
    lower = lower or _lowering(trainer.config, None)
    evaluate = per_device(jax.vmap(trainer.evaluate), shard, 2)
    with rng.unrolled_threefry():  # see dqn_jax.rng: an evaluation's draws are each read once
        return lower("evaluate", evaluate, (params, keys))


def compile_evaluate(trainer: Trainer, shard: NamedSharding, params, keys: jax.Array) -> Callable:
    """:func:`lower_evaluate`, compiled."""
    return lower_evaluate(trainer, shard, params, keys).compile()


DEFAULT_CHECKPOINT_EVERY = 5
"""Chunks between checkpoints when ``train`` is not told (one is always saved at the end)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGINT) stopped a run at a chunk boundary after saving a checkpoint."""


class ConfigMismatchError(ValueError):
    """A resumed run's config differs from the saved one (and the change was not forced)."""


def load_config(run_dir: str | Path) -> Config:
    """The config saved in ``RUN_DIR/config.json`` (:class:`~dqn_jax.config.RunDirError` if
    missing or damaged)."""
    return load_run_config(run_dir)


def state_shapes(trainer: Trainer) -> TrainState:
    """Shapes and dtypes of the train state of all seeds (traced, nothing compiled)."""
    config = trainer.config
    keys = seed_keys(config, trainer.seeds_per_point)
    return jax.eval_shape(jax.vmap(trainer.init), keys, run_indices(config))


def checkpoint_step(config: Config, iteration: int) -> int:
    """A checkpoint's step: env steps per seed done after ``iteration`` iterations."""
    return iteration * config.env_steps_per_iteration


def preflight(config: Config, shapes, out: Path, resume: bool, force: bool, keep: int) -> None:
    """Every check that can fail before compiling: run dir writable, disk space for ``keep``
    checkpoints of a state shaped ``shapes`` (a pytree of ``jax.ShapeDtypeStruct``),
    checkpoints present (resume) or absent (fresh run), config unchanged (unless ``force``)."""
    if distributed.is_main():  # one probe file name: the other processes would race on it
        report.check_writable(out)
    saved = ckpt.saved_steps(out)
    if resume:
        if not saved:
            raise SystemExit(f"error: cannot resume: no checkpoint in {ckpt.checkpoint_dir(out)}")
        diff = config_diff(load_config(out), config)
        if diff and not force:
            raise ConfigMismatchError(
                f"the config differs from the one saved in {out / 'config.json'}: "
                + "; ".join(diff)
                + "; resume with the saved config, or pass --force to resume with the new one"
            )
    elif saved:
        raise SystemExit(
            f"error: {out} already holds checkpoints of a run (steps {saved}); resume it with "
            f"--resume {out}, or choose another run directory"
        )
    try:
        ckpt.check_free_space(out, ckpt.estimate_bytes(shapes), keep)
    except OSError as err:
        raise SystemExit(f"error: {err.strerror}") from None


def open_run_dir(
    config: Config, shapes, out: Path | None, resume: bool, force: bool, keep: int, tb: bool
):
    """:func:`preflight` of ``out`` (if given), then the TensorBoard writer (None unless ``tb``).
    A refused run leaves no run directory behind that it created."""
    if resume and out is None:
        raise ValueError("resume needs the run directory")
    created = out is not None and not out.exists()
    try:
        if out is not None:
            preflight(config, shapes, out, resume, force, keep)
        return open_tensorboard(out, tb and distributed.is_main())
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def end_early(
    chunk: int, is_last: bool, interrupted: bool, stop_after: int | None, saved, out, reporter
) -> bool:
    """After chunk ``chunk`` (checkpoint ``saved`` written, or None): raise
    :class:`TrainingInterrupted` on Ctrl-C; True if the run stops here (``stop_after``)."""
    if interrupted:
        reporter.close(stopped=("interrupted (Ctrl-C)", chunk, saved is not None))
        where = f"saved {saved}" if saved else "nothing saved (no run directory)"
        hint = f"; resume with: dqn-jax train --resume {out}" if out else ""
        raise TrainingInterrupted(f"interrupted after chunk {chunk}: {where}{hint}")
    if chunk == stop_after and not is_last:
        reporter.close(stopped=("stop_after_chunks", chunk, saved is not None))
        return True
    return False


def open_tensorboard(out: Path | None, enabled: bool):
    if not enabled:
        return None
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise SystemExit(
            "error: --tensorboard needs tensorboardX: pip install 'dqn-jax[tensorboard]'"
        ) from None
    if out is None:
        raise SystemExit("error: TensorBoard logging needs a run directory")
    return SummaryWriter(str(out / "tensorboard"))


def _truncate_metrics(path: Path, last_chunk: int) -> None:
    """Keep the JSONL records of chunks up to ``last_chunk`` (a resume continues after it)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln)["chunk"] <= last_chunk]
    path.write_text("".join(ln + "\n" for ln in kept))


def _rebuild_episode_log(path: Path | None, episodes: list, bounds: list[int]) -> report.EpisodeLog:
    """Recreate ``episodes.csv`` (and the log) from the checkpoint's episodes, chunk by chunk
    as an uninterrupted run appended them, so the file ends identical to one."""
    log = report.EpisodeLog(path, len(episodes))
    for lo, hi in itertools.pairwise(bounds):
        log.append([e[(e[:, 0] > lo) & (e[:, 0] <= hi)] for e in episodes])
    return log


def _host_state(chunk, iteration, log: report.EpisodeLog, evals, config: Config) -> dict:
    return {
        "chunk": chunk,
        "iteration": iteration,
        "env_step": checkpoint_step(config, iteration),
        "episodes": [log.seed_array(s).tolist() for s in range(config.num_seeds)],
        "evals": [[step, r.tolist()] for step, r in evals],
        "config": config.to_dict(),
    }


@contextlib.contextmanager
def deferred_sigint(echo: Callable[[str], Any]):
    """While active, a first Ctrl-C only sets ``flag[0]`` (the loop saves and stops at the next
    chunk boundary); a second one raises KeyboardInterrupt at once. Main thread only."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = True
        echo("\ninterrupt: saving a checkpoint at the end of this chunk (Ctrl-C again to abort)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _start(out: Path | None, compiled: Compiled, trainer: Trainer):
    """A new run: initial (and prefilled) state, empty logs, 0 chunks done."""
    config = trainer.config
    state = compiled.init(
        jax.device_put(seed_keys(config, trainer.seeds_per_point), compiled.sharding),
        jax.device_put(run_indices(config), compiled.sharding),
    )
    if compiled.prefill is not None:
        state = compiled.prefill(state)
    log = report.EpisodeLog(out / "episodes.csv" if out else None, config.num_seeds)
    if out is not None:
        (out / "metrics.jsonl").write_text("")
        (out / "q_probes.csv").unlink(missing_ok=True)
    return state, log, [], 0


def _resume(
    out: Path, files: Path | None, trainer: Trainer, compiled: Compiled, bounds: list[int], echo
):
    """A resumed run: the latest readable checkpoint placed with the run's shardings."""
    target = ckpt.abstract_state(state_shapes(trainer), compiled.sharding)
    restored, log, evals, done = resume_from(out, target, bounds, echo, files is not None)
    if files is not None:
        report.truncate_csv_after(files / "q_probes.csv", 1, restored.step)
    return restored.state, log, evals, done


def resume_from(out: Path, target, bounds: list[int], echo, write_files: bool = True):
    """``(restored, log, evals, chunks_done)`` of the latest readable checkpoint of ``out``
    restored onto ``target`` (damaged later ones set aside), with ``episodes.csv`` and
    ``metrics.jsonl`` rewritten as they were at that point (unless not ``write_files``: the
    processes other than process 0 of a multi-process run); ``bounds[k]`` is the env step at
    the end of chunk ``k``."""
    files = out if write_files else None
    try:
        restored = ckpt.restore(out, target, echo=echo)
    except ckpt.CheckpointError as err:
        raise SystemExit(f"error: cannot resume: {err}") from None
    distributed.barrier("restored")
    moved = ckpt.set_aside_after(out, restored.step) if distributed.is_main() else []
    distributed.barrier("set aside")
    for path in moved:
        echo(f"moved the unreadable checkpoint aside to {path}")
    host = restored.host
    done = host["chunk"]
    if bounds[done] != restored.step:
        raise SystemExit(
            f"error: cannot resume: checkpoint step {restored.step} is not the end of chunk "
            f"{done} of this config (chunk {done} ends at env step {bounds[done]})"
        )
    episodes = [np.asarray(e, np.float64).reshape(-1, 3) for e in host["episodes"]]
    path = None if files is None else files / "episodes.csv"
    log = _rebuild_episode_log(path, episodes, bounds[: done + 1])
    if files is not None:
        _truncate_metrics(files / "metrics.jsonl", done)
    evals = [(step, np.asarray(r, np.float32)) for step, r in host["evals"]]
    echo(f"resumed from {ckpt.checkpoint_dir(out) / str(restored.step)} (chunk {done})")
    return restored, log, evals, done


class Checkpointer:
    """Saves the train state and the host's logs at chunk boundaries (no-op without a run
    directory) and remembers the last good checkpoint for error messages."""

    def __init__(self, out: Path | None, keep: int, config: Config):
        self.out, self.config = out, config
        self.manager = ckpt.open_manager(out, keep) if out is not None else None
        self.last_saved = max(ckpt.saved_steps(out), default=None) if out is not None else None

    def save(
        self, chunk: int, iteration: int, state, reporter: report.Reporter, **host_extra
    ) -> Path | None:
        """Checkpoint ``state`` after ``iteration`` iterations (chunk ``chunk``) with the
        reporter's logs and ``host_extra`` (JSON values) in its host record."""
        if self.manager is None:
            return None
        step = checkpoint_step(self.config, iteration)
        host = _host_state(chunk, iteration, reporter.log, reporter.evals, self.config)
        host.update(host_extra)
        path = ckpt.save(self.manager, step, state, host)
        self.last_saved = step
        return path

    def last_good(self) -> str:
        if self.last_saved is None:
            return "no checkpoint was saved"
        return f"last good checkpoint: {ckpt.checkpoint_dir(self.out) / str(self.last_saved)}"


def _run_chunk(
    compiled: Compiled,
    state,
    config: Config,
    chunk: int,
    n: int,
    iteration: int,
    reporter: report.Reporter,
    saver: Checkpointer,
    is_last: bool,
):
    """Run one chunk of ``n`` iterations from ``iteration`` and report it; the new state."""
    chunk_start = time.perf_counter()
    state, outputs = compiled.chunks[n](state, jnp.int32(iteration))
    outputs = distributed.to_host(outputs)
    first_vstep = iteration * config.vector_steps_per_iteration
    env_step = checkpoint_step(config, iteration + n)
    stats = report.chunk_stats(
        distributed.to_host(state.agent.stats), params_finite(compiled, state)
    )
    first_step = first_vstep * config.num_envs
    reporter.check_finite(chunk, first_step, env_step, stats, saver.last_good())
    window = report.extract_episodes(
        outputs.ep_length, outputs.ep_return, first_vstep, config.num_envs
    )
    out = reporter.out
    if out is not None and config.probe_states:
        rows = report.probe_rows(outputs.q_probe, iteration, config.env_steps_per_iteration)
        report.append_csv(out / "q_probes.csv", rows, report.PROBE_FIELDS)
    periodic = config.eval_every_chunks and chunk % config.eval_every_chunks == 0
    evaluation = None
    if compiled.evaluate and periodic and not is_last:
        evaluation = _evaluate(compiled, state)
    seconds = time.perf_counter() - chunk_start
    reporter.chunk(
        chunk, env_step, window, stats, evaluation, seconds, n * config.env_steps_per_iteration
    )
    return state


def train(
    config: Config,
    run_dir: str | Path | None = None,
    *,
    trainer: Trainer | None = None,
    progress: bool = True,
    echo: Callable[[str], Any] = print,
    devices: list | None = None,
    resume: bool = False,
    force: bool = False,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    keep_checkpoints: int = ckpt.DEFAULT_KEEP,
    stop_after_chunks: int | None = None,
    tensorboard: bool = False,
    program_cache: str | Path | None = None,
) -> RunResult:
    """Run ``config`` (all seeds at once); write the run directory if ``run_dir`` is given.

    Files: ``config.json``, ``episodes.csv``, ``metrics.jsonl``, ``evals.csv``,
    ``summary.json``, ``episodes.png``, ``checkpoints/<env_step>/`` (every ``checkpoint_every``
    chunks, 0 = only at the end, and at the end; the last ``keep_checkpoints`` kept) and, with
    ``tensorboard``, ``tensorboard/``. Every check that can fail (unwritable directory, too
    little disk space, config changed on ``resume`` unless ``force``) fails before compiling.

    ``resume`` continues ``run_dir`` from its latest readable checkpoint, bit-identical to an
    uninterrupted run. ``stop_after_chunks=k`` saves after chunk ``k`` and returns early (the
    summary then says ``stopped_after_chunk``). Ctrl-C saves at the end of the running chunk
    and raises :class:`TrainingInterrupted`. Raises :class:`NonFiniteError` at the first chunk
    boundary where a seed's loss or parameters are NaN/inf, without saving that state.
    ``devices`` (default: all of JAX's) share the seeds. ``program_cache``: a directory where
    the lowered programs are kept (:mod:`dqn_jax.program_cache`; what the CLI passes), so that
    an identical run skips tracing; ignored when a ``trainer`` is passed in.

    In a multi-process run (:mod:`dqn_jax.distributed`) every process calls this with the same
    arguments; process 0 alone writes the files and prints, every process its checkpoint shards.
    """
    if trainer is not None:
        program_cache = None  # its closures (swaps, sweep tables) are not in the cache's key
    trainer = trainer or make_train(config)
    config = trainer.config
    seed_sharding(config.num_seeds, devices)  # refuses a bad multi-process layout, before files
    out = Path(run_dir) if run_dir is not None else None
    files = out if distributed.is_main() else None
    if not distributed.is_main():
        progress, echo = False, lambda s: None
    shapes = state_shapes(trainer) if out is not None else None
    tb = open_run_dir(config, shapes, out, resume, force, keep_checkpoints, tensorboard)
    sizes = chunk_sizes(config.num_iterations, config.num_chunks)
    bounds = [checkpoint_step(config, it) for it in itertools.accumulate(sizes, initial=0)]
    compiled = compile_all(trainer, sizes, devices, program_cache)
    echo(
        f"{config.env} | {config.variant} | {config.num_seeds} seed(s) x "
        f"{config.total_steps:,} env steps | {compiled.sharding.mesh.size} device(s) | "
        f"compiled in {compiled.seconds:.1f}s"
    )
    run_start = time.perf_counter()
    if resume:
        state, log, evals, done = _resume(out, files, trainer, compiled, bounds, echo)
    else:
        state, log, evals, done = _start(files, compiled, trainer)
    if files is not None:
        report.write_json(files / "config.json", config.to_dict())
    saver = Checkpointer(out, keep_checkpoints, config)
    seeds = run_seeds(config, trainer.seeds_per_point).tolist()
    reporter = report.Reporter(
        config,
        seeds,
        files,
        len(sizes),
        log=log,
        evals=evals,
        start_step=bounds[done],
        tb=tb,
        progress=progress,
        echo=echo,
    )
    iteration = sum(sizes[:done])
    with deferred_sigint(echo) as interrupted:
        for chunk, n in enumerate(sizes[done:], start=done + 1):
            is_last = chunk == len(sizes)
            state = _run_chunk(
                compiled, state, config, chunk, n, iteration, reporter, saver, is_last
            )
            iteration += n
            interrupt = distributed.any_process(interrupted[0])  # all stop at the same chunk
            stop = interrupt or chunk == stop_after_chunks
            due = checkpoint_every and chunk % checkpoint_every == 0 and not is_last
            path = saver.save(chunk, iteration, state, reporter) if stop or due else None
            if end_early(chunk, is_last, interrupt, stop_after_chunks, path, out, reporter):
                summary = {"stopped_after_chunk": chunk, "env_step": bounds[chunk]}
                return RunResult(state, reporter.episodes(), np.zeros((0, 0)), summary)
    return _finish(compiled, state, config, reporter, saver, iteration, run_start)


def _finish(
    compiled: Compiled,
    state,
    config: Config,
    reporter: report.Reporter,
    saver: Checkpointer,
    iteration: int,
    run_start: float,
) -> RunResult:
    """Final evaluation, last checkpoint, summary and figures."""
    reporter.bar.close()
    final_eval = _evaluate(compiled, state) if compiled.evaluate else np.zeros((0, 0))
    jax.block_until_ready(state)
    run_s = time.perf_counter() - run_start
    env_step = checkpoint_step(config, iteration)
    if saver.manager is not None and saver.last_saved != env_step:
        saver.save(config.num_chunks, iteration, state, reporter)
    devices = compiled.sharding.mesh.devices.flat
    title = f"{config.env} - {config.variant}"
    summary = reporter.finish(final_eval, env_step, compiled.seconds, run_s, devices, title)
    if reporter.out is not None and config.probe_states:
        from dqn_jax.plots import plot_q_probes

        out = reporter.out
        title = f"{config.env} - {config.variant}: Q-values of fixed states"
        plot_q_probes(out / "q_probes.csv", out / "q_probes.png", title)
    return RunResult(state, reporter.episodes(), final_eval, summary)


def evaluate_checkpoint(
    run_dir: str | Path,
    episodes: int | None = None,
    step: int | None = None,
    *,
    echo: Callable[[str], Any] = print,
    devices: list | None = None,
) -> dict:
    """Greedy evaluation of the parameters of checkpoint ``step`` (default: the latest readable)
    of ``run_dir``, per seed, with ``episodes`` episodes (default: the run's ``eval_episodes``).

    Writes and returns ``RUN_DIR/eval_<step>.json``: step, episodes, returns per seed and means.
    """
    out = Path(run_dir)
    config = load_config(out)
    config = config.replace(eval_episodes=episodes or config.eval_episodes or 10)
    table, seeds_per_point = saved_sweep(out, config)
    trainer = make_train(config, sweep_table=table, seeds_per_point=seeds_per_point)
    shard = seed_sharding(config.num_seeds, devices)
    target = ckpt.abstract_state(state_shapes(trainer), shard)
    try:
        restored = ckpt.restore(out, target, step, echo=echo)
    except ckpt.CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    params = restored.state.agent.learner.params
    keys = jax.device_put(eval_keys(config, trainer.seeds_per_point), shard)
    evaluate = compile_evaluate(trainer, shard, params, keys)
    returns = np.asarray(jax.device_get(evaluate(params, keys)))
    seeds = run_seeds(config, trainer.seeds_per_point).tolist()
    return write_eval(out, restored.step, seeds, returns, echo)


def write_eval(out: Path, step: int, seeds: list[int], returns: np.ndarray, echo) -> dict:
    """Write and echo ``RUN_DIR/eval_<step>.json`` of ``returns f32[runs, episodes]``."""
    result = {
        "step": step,
        "episodes": returns.shape[1],
        "seeds": seeds,
        "mean_return_per_seed": [float(r.mean()) for r in returns],
        "mean_return": float(returns.mean()),
        "returns": returns.tolist(),
    }
    path = out / f"eval_{step}.json"
    report.write_json(path, result)
    for seed, r in zip(seeds, returns, strict=True):
        echo(f"seed {seed}: mean {r.mean():.1f} [{r.min():g}, {r.max():g}] over {len(r)} episodes")
    echo(f"step {step}: mean greedy return {returns.mean():.2f} -> {path}")
    return result


def _evaluate(compiled: Compiled, state: TrainState) -> np.ndarray:
    returns = compiled.evaluate(state.agent.learner.params, compiled.eval_keys)
    return np.asarray(distributed.to_host(returns))
