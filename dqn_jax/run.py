"""The host side of a run: compile, run the chunks, report between them, write the run directory.

``train(config, run_dir)`` is what the CLI calls. All seeds run in one compiled program:
``jit(vmap(run_chunk))`` with the seed axis first and the train state donated.
"""

from __future__ import annotations

import contextlib
import itertools
import json
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
from dqn_jax import report
from dqn_jax.config import Config
from dqn_jax.loop import Trainer, TrainState, make_train


class NonFiniteError(RuntimeError):
    """Raised when a loss or the parameters of some seed stop being finite."""


class RunResult(NamedTuple):
    state: TrainState  # final train state (leading seed axis)
    episodes: list[np.ndarray]  # per seed: [n, 3] (env_step, length, return)
    eval_returns: np.ndarray  # f32[num_seeds, eval_episodes] at the end
    summary: dict


def seed_keys(config: Config) -> jax.Array:
    """One PRNG key per run: run ``i`` uses ``PRNGKey(seed + i)``, whatever ``num_seeds`` is."""
    seeds = jnp.arange(config.seed, config.seed + config.num_seeds, dtype=jnp.uint32)
    return jax.vmap(jax.random.PRNGKey)(seeds)


def run_indices(config: Config) -> jax.Array:
    """``i32[num_seeds]``: the index of each run (selects its sweep values, if any)."""
    return jnp.arange(config.num_seeds, dtype=jnp.int32)


def eval_keys(config: Config) -> jax.Array:
    """Evaluation keys, independent of the training keys (evaluating never changes training)."""
    return jax.vmap(lambda k: jax.random.fold_in(k, 0x5EED))(seed_keys(config))


def chunk_sizes(num_iterations: int, num_chunks: int) -> list[int]:
    """Split iterations into ``num_chunks`` chunks of at most two distinct sizes (two compiles)."""
    base, extra = divmod(num_iterations, num_chunks)
    return [base + 1] * extra + [base] * (num_chunks - extra)


def nonfinite_seeds(state: TrainState, loss: np.ndarray) -> list[int]:
    """Seeds whose loss in this chunk or whose current parameters contain NaN/inf."""
    leaves = jax.tree.leaves(state.learner.params)
    params_ok = np.asarray(
        jnp.stack([jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1) for x in leaves]).all(0)
    )
    loss_ok = np.isfinite(loss.reshape(loss.shape[0], -1)).all(axis=1)
    return [int(s) for s in np.nonzero(~(params_ok & loss_ok))[0]]


class Compiled(NamedTuple):
    init: Callable
    prefill: Callable | None
    chunks: dict[int, Callable]
    evaluate: Callable | None
    seconds: float
    sharding: NamedSharding  # of every array with a leading seed axis


def seed_sharding(num_seeds: int, devices: list | None = None) -> NamedSharding:
    """Shard the leading seed axis over the most devices that divide ``num_seeds`` evenly.

    One CPU, N CPU devices (``--xla_force_host_platform_device_count``) or several GPUs: the same
    program, each device running its share of the seeds; seeds never communicate.
    """
    devices = list(devices or jax.devices())
    n = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
    return NamedSharding(Mesh(np.array(devices[:n]), ("seed",)), PartitionSpec("seed"))


def per_device(fn: Callable, shard: NamedSharding, num_args: int, replicated_args=()) -> Callable:
    """``fn`` (vmapped over seeds) run by each device on its own seeds with ``shard_map``.

    Each device runs exactly the single-device program on its share of the seeds, so a sharded
    run is bit-identical to the unsharded one (GSPMD's automatic partitioning of the same
    program was measured here to change float rounding).
    """
    specs = tuple(
        PartitionSpec() if i in replicated_args else PartitionSpec("seed") for i in range(num_args)
    )
    return jax.shard_map(
        fn, mesh=shard.mesh, in_specs=specs, out_specs=PartitionSpec("seed"), check_vma=False
    )


def compile_all(trainer: Trainer, sizes: list[int], devices: list | None = None) -> Compiled:
    """AOT-compile every program of the run with the seed axis sharded over ``devices``
    (default: all), timed so that compile and run time are reported apart."""
    config = trainer.config
    shard = seed_sharding(config.num_seeds, devices)
    keys = jax.device_put(seed_keys(config), shard)
    start = time.perf_counter()
    indices = jax.device_put(run_indices(config), shard)
    init = jax.jit(per_device(jax.vmap(trainer.init), shard, 2)).lower(keys, indices).compile()
    state_shape = jax.eval_shape(jax.vmap(trainer.init), keys, indices)
    state_shape = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shard), state_shape
    )
    prefill = None
    if config.prefill_episodes > 0 and config.variant != "random":
        # Seeds one after another (lax.map), not vmapped: the prefill is a while loop over a
        # per-seed episode count, and a batched predicate would turn every iteration into a
        # select over the whole replay buffer (measured: ~30x slower).
        each_seed = lambda s: jax.lax.map(trainer.prefill, s)  # noqa: E731
        prefill = jax.jit(per_device(each_seed, shard, 1), donate_argnums=0)
        prefill = prefill.lower(state_shape).compile()
    chunks = {}
    for n in sorted(set(sizes)):
        chunk = jax.vmap(lambda s, it, n=n: trainer.run_chunk(s, it, n), in_axes=(0, None))
        fn = jax.jit(per_device(chunk, shard, 2, replicated_args=(1,)), donate_argnums=0)
        chunks[n] = fn.lower(state_shape, jnp.int32(0)).compile()
    evaluate = None
    if config.eval_episodes > 0:
        params_shape = state_shape.learner.params
        evaluate = jax.jit(per_device(jax.vmap(trainer.evaluate), shard, 2))
        evaluate = evaluate.lower(params_shape, keys).compile()
    return Compiled(init, prefill, chunks, evaluate, time.perf_counter() - start, shard)


DEFAULT_CHECKPOINT_EVERY = 5
"""Chunks between checkpoints when ``train`` is not told (one is always saved at the end)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGINT) stopped a run at a chunk boundary after saving a checkpoint."""


class ConfigMismatchError(ValueError):
    """A resumed run's config differs from the saved one (and the change was not forced)."""


def load_config(run_dir: str | Path) -> Config:
    """The config saved in ``RUN_DIR/config.json``."""
    path = Path(run_dir) / "config.json"
    try:
        return Config(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise SystemExit(f"error: {path} not found: {run_dir} is not a run directory") from None


def config_diff(old: Config, new: Config) -> list[str]:
    """One ``field: old -> new`` line per field that differs."""
    a, b = old.to_dict(), new.to_dict()
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in {**a, **b} if a.get(k) != b.get(k)]


def state_shapes(trainer: Trainer) -> TrainState:
    """Shapes and dtypes of the train state of all seeds (traced, nothing compiled)."""
    config = trainer.config
    return jax.eval_shape(jax.vmap(trainer.init), seed_keys(config), run_indices(config))


def checkpoint_step(config: Config, iteration: int) -> int:
    """A checkpoint's step: env steps per seed done after ``iteration`` iterations."""
    return iteration * config.env_steps_per_iteration


def _preflight(config: Config, trainer: Trainer, out: Path, resume: bool, force: bool, keep: int):
    """Every check that can fail before compiling: run dir writable, disk space for the
    checkpoints, checkpoints present (resume) or absent (fresh run), config unchanged."""
    report.check_writable(out)
    saved = ckpt.saved_steps(out)
    if resume:
        if not saved:
            raise SystemExit(f"error: cannot resume: no checkpoint in {ckpt.checkpoint_dir(out)}")
        diff = config_diff(load_config(out), config)
        if diff and not force:
            raise ConfigMismatchError(
                f"the config differs from the one saved in {out / 'config.json'}:\n  "
                + "\n  ".join(diff)
                + "\nresume with the saved config, or pass --force to resume with the new one"
            )
    elif saved:
        raise SystemExit(
            f"error: {out} already holds checkpoints of a run (steps {saved}); resume it with "
            f"--resume {out}, or choose another run directory"
        )
    try:
        ckpt.check_free_space(out, ckpt.estimate_bytes(state_shapes(trainer)), keep)
    except OSError as err:
        raise SystemExit(f"error: {err.strerror}") from None


def _open_tensorboard(out: Path | None, enabled: bool):
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


def chunk_metrics(chunk: int, env_step: int, outputs, window, evaluation, seconds: float) -> dict:
    """The JSONL record of one chunk: per-seed mean loss and Q, episodes and their mean return,
    evaluation mean (if evaluated at this chunk), wall time."""
    record = {
        "chunk": chunk,
        "env_step": env_step,
        "loss": [float(x) for x in np.mean(outputs.loss.reshape(len(window), -1), axis=1)],
        "q_mean": [float(x) for x in np.mean(outputs.q_mean.reshape(len(window), -1), axis=1)],
        "episodes": [len(w) for w in window],
        "return_mean": [float(w[:, 2].mean()) if len(w) else None for w in window],
        "seconds": round(seconds, 4),
    }
    if evaluation is not None:
        record["eval"] = [float(x) for x in evaluation.mean(axis=1)]
    return record


def log_metrics(out: Path | None, tb, record: dict) -> None:
    """Append ``record`` to ``metrics.jsonl`` (and its scalars to TensorBoard, if open)."""
    if out is not None:
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
    if tb is not None:
        for name in ("loss", "q_mean", "return_mean", "eval"):
            values = [v for v in record.get(name) or [] if v is not None]
            if values:
                tb.add_scalar(f"{name}/mean", float(np.mean(values)), record["env_step"])
            for s, v in enumerate(record.get(name) or []):
                if v is not None:
                    tb.add_scalar(f"{name}/seed_{s}", v, record["env_step"])


def _truncate_metrics(path: Path, last_chunk: int) -> None:
    """Keep the JSONL records of chunks up to ``last_chunk`` (a resume continues after it)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln)["chunk"] <= last_chunk]
    path.write_text("".join(ln + "\n" for ln in kept))


def _rebuild_episode_log(path: Path, episodes: list, bounds: list[int]) -> report.EpisodeLog:
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


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@contextlib.contextmanager
def _deferred_sigint(echo: Callable[[str], Any]):
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


def _start(out: Path | None, compiled: Compiled, config: Config):
    """A new run: initial (and prefilled) state, empty logs, 0 chunks done."""
    state = compiled.init(
        jax.device_put(seed_keys(config), compiled.sharding),
        jax.device_put(run_indices(config), compiled.sharding),
    )
    if compiled.prefill is not None:
        state = compiled.prefill(state)
    log = report.EpisodeLog(out / "episodes.csv" if out else None, config.num_seeds)
    if out is not None:
        (out / "metrics.jsonl").write_text("")
        (out / "q_probes.csv").unlink(missing_ok=True)
    return state, log, [], 0


def _resume(out: Path, trainer: Trainer, compiled: Compiled, bounds: list[int], echo):
    """A resumed run: the latest readable checkpoint (damaged later ones set aside) placed with
    the run's shardings, ``episodes.csv`` and ``metrics.jsonl`` as they were at that point."""
    target = ckpt.abstract_state(state_shapes(trainer), compiled.sharding)
    try:
        restored = ckpt.restore(out, target, echo=echo)
    except ckpt.CheckpointError as err:
        raise SystemExit(f"error: cannot resume: {err}") from None
    for moved in ckpt.set_aside_after(out, restored.step):
        echo(f"moved the unreadable checkpoint aside to {moved}")
    host = restored.host
    done = host["chunk"]
    if bounds[done] != restored.step:
        raise SystemExit(
            f"error: cannot resume: checkpoint step {restored.step} is not the end of chunk "
            f"{done} of this config (chunk {done} ends at env step {bounds[done]})"
        )
    episodes = [np.asarray(e, np.float64).reshape(-1, 3) for e in host["episodes"]]
    log = _rebuild_episode_log(out / "episodes.csv", episodes, bounds[: done + 1])
    _truncate_metrics(out / "metrics.jsonl", done)
    report.truncate_csv_after(out / "q_probes.csv", 1, restored.step)
    evals = [(step, np.asarray(r, np.float32)) for step, r in host["evals"]]
    echo(f"resumed from {ckpt.checkpoint_dir(out) / str(restored.step)} (chunk {done})")
    return restored.state, log, evals, done


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
    ``devices`` (default: all of JAX's) share the seeds.
    """
    trainer = trainer or make_train(config)
    out = Path(run_dir) if run_dir is not None else None
    if resume and out is None:
        raise ValueError("resume needs the run directory")
    if out is not None:
        _preflight(config, trainer, out, resume, force, keep_checkpoints)
    tb = _open_tensorboard(out, tensorboard)
    sizes = chunk_sizes(config.num_iterations, config.num_chunks)
    bounds = [checkpoint_step(config, it) for it in itertools.accumulate(sizes, initial=0)]
    compiled = compile_all(trainer, sizes, devices)
    echo(
        f"{config.env} | {config.variant} | {config.num_seeds} seed(s) x "
        f"{config.total_steps:,} env steps | {compiled.sharding.mesh.size} device(s) | "
        f"compiled in {compiled.seconds:.1f}s"
    )

    run_start = time.perf_counter()
    if resume:
        state, log, evals, done = _resume(out, trainer, compiled, bounds, echo)
    else:
        state, log, evals, done = _start(out, compiled, config)
    if out is not None:
        report.write_json(out / "config.json", config.to_dict())
    manager = ckpt.open_manager(out, keep_checkpoints) if out is not None else None
    last_saved = max(ckpt.saved_steps(out), default=None) if out is not None else None

    def save(chunk: int, iteration: int) -> Path | None:
        nonlocal last_saved
        if manager is None:
            return None
        host = _host_state(chunk, iteration, log, evals, config)
        path = ckpt.save(manager, checkpoint_step(config, iteration), state, host)
        last_saved = checkpoint_step(config, iteration)
        return path

    def last_good() -> str:
        if last_saved is None:
            return "no checkpoint was saved"
        return f"last good checkpoint: {ckpt.checkpoint_dir(out) / str(last_saved)}"

    bar = progress_bar(config.total_steps, progress)
    bar.update(bounds[done])
    iteration = sum(sizes[:done])
    steps_per_iteration = config.env_steps_per_iteration * config.num_seeds
    loop_start = time.perf_counter()
    with _deferred_sigint(echo) as interrupted:
        for chunk, n in enumerate(sizes[done:], start=done + 1):
            chunk_start = time.perf_counter()
            state, outputs = compiled.chunks[n](state, jnp.int32(iteration))
            outputs = jax.device_get(outputs)
            first_vstep = iteration * config.vector_steps_per_iteration
            iteration += n
            env_step = checkpoint_step(config, iteration)
            bad = nonfinite_seeds(state, outputs.loss)
            if bad:
                if tb is not None:
                    tb.close()
                raise NonFiniteError(
                    f"non-finite loss or parameters at chunk {chunk} (env steps "
                    f"{first_vstep * config.num_envs:,}-{env_step:,}) in seed(s) "
                    f"{', '.join(str(config.seed + s) for s in bad)} (run index {bad}); "
                    f"{last_good()}"
                )
            window = report.extract_episodes(
                outputs.ep_length, outputs.ep_return, first_vstep, config.num_envs
            )
            log.append(window)
            if out is not None and config.probe_states:
                rows = report.probe_rows(
                    outputs.q_probe, iteration - n, config.env_steps_per_iteration
                )
                report.append_csv(out / "q_probes.csv", rows, report.PROBE_FIELDS)
            periodic = config.eval_every_chunks and chunk % config.eval_every_chunks == 0
            evaluation = None
            if compiled.evaluate and periodic and chunk != len(sizes):
                evaluation = _evaluate(compiled, state, config)
                evals.append((env_step, evaluation))
            seconds = time.perf_counter() - chunk_start
            log_metrics(
                out, tb, chunk_metrics(chunk, env_step, outputs, window, evaluation, seconds)
            )
            loss = float(np.mean(outputs.loss[:, -1]))
            line = report.window_line(chunk, len(sizes), env_step, window, log, loss, seconds)
            if evaluation is not None:
                line += f" | eval {evaluation.mean():.1f}"
            rate = (env_step - bounds[done]) * config.num_seeds / (time.perf_counter() - loop_start)
            eta = (config.total_steps - env_step) * config.num_seeds / rate
            line += f" | {n * steps_per_iteration / seconds:,.0f} steps/s | ETA {_eta(eta)}"
            bar.update(n * config.env_steps_per_iteration)
            bar.write(line) if progress else echo(line)
            stop = interrupted[0] or chunk == stop_after_chunks
            due = checkpoint_every and chunk % checkpoint_every == 0 and chunk != len(sizes)
            if stop or due:
                path = save(chunk, iteration)
            if interrupted[0]:
                bar.close()
                where = f"saved {path}" if path else "nothing saved (no run directory)"
                resume_hint = f"; resume with: dqn-jax train --resume {out}" if out else ""
                raise TrainingInterrupted(f"interrupted after chunk {chunk}: {where}{resume_hint}")
            if chunk == stop_after_chunks and chunk != len(sizes):
                bar.close()
                episodes = [log.seed_array(s) for s in range(config.num_seeds)]
                summary = {"stopped_after_chunk": chunk, "env_step": env_step}
                return RunResult(state, episodes, np.zeros((0, 0)), summary)
    bar.close()
    final_eval = _evaluate(compiled, state, config) if compiled.evaluate else np.zeros((0, 0))
    evals.append((iteration * config.env_steps_per_iteration, final_eval))
    jax.block_until_ready(state)
    run_s = time.perf_counter() - run_start
    if manager is not None and last_saved != checkpoint_step(config, iteration):
        save(len(sizes), iteration)
    if tb is not None:
        tb.close()

    episodes = [log.seed_array(s) for s in range(config.num_seeds)]
    summary = _summary(config, compiled, run_s, episodes, final_eval)
    if out is not None:
        write_evals(out / "evals.csv", evals, config)
        report.write_json(out / "summary.json", summary)
        from dqn_jax.plots import plot_episodes

        plot_episodes(episodes, out / "episodes.png", f"{config.env} - {config.variant}")
        if config.probe_states:
            from dqn_jax.plots import plot_q_probes

            title = f"{config.env} - {config.variant}: Q-values of fixed states"
            plot_q_probes(out / "q_probes.csv", out / "q_probes.png", title)
    echo(final_line(summary))
    return RunResult(state, episodes, final_eval, summary)


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
    trainer = make_train(config)
    shard = seed_sharding(config.num_seeds, devices)
    target = ckpt.abstract_state(state_shapes(trainer), shard)
    try:
        restored = ckpt.restore(out, target, step, echo=echo)
    except ckpt.CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    evaluate = jax.jit(per_device(jax.vmap(trainer.evaluate), shard, 2))
    keys = jax.device_put(eval_keys(config), shard)
    returns = np.asarray(jax.device_get(evaluate(restored.state.learner.params, keys)))
    result = {
        "step": restored.step,
        "episodes": config.eval_episodes,
        "seeds": list(range(config.seed, config.seed + config.num_seeds)),
        "mean_return_per_seed": [float(r.mean()) for r in returns],
        "mean_return": float(returns.mean()),
        "returns": returns.tolist(),
    }
    report.write_json(out / f"eval_{restored.step}.json", result)
    for seed, r in zip(result["seeds"], returns, strict=True):
        echo(f"seed {seed}: mean {r.mean():.1f} [{r.min():g}, {r.max():g}] over {len(r)} episodes")
    path = out / f"eval_{restored.step}.json"
    echo(f"step {restored.step}: mean greedy return {returns.mean():.2f} -> {path}")
    return result


def _evaluate(compiled: Compiled, state: TrainState, config: Config) -> np.ndarray:
    keys = jax.device_put(eval_keys(config), compiled.sharding)
    returns = compiled.evaluate(state.learner.params, keys)
    return np.asarray(jax.device_get(returns))


def progress_bar(total: int, enabled: bool):
    """A tqdm bar over ``total`` env steps (disabled: a no-op bar)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", unit_scale=True, disable=not enabled, leave=False)


def write_evals(path: Path, evals: list[tuple[int, np.ndarray]], config: Config) -> None:
    """``evals.csv``: per evaluation point and seed, mean/min/max greedy return."""
    with path.open("w") as f:
        f.write("seed,env_step,mean_return,min_return,max_return\n")
        for env_step, returns in evals:
            for s in range(returns.shape[0]):
                r = returns[s]
                f.write(f"{s},{env_step},{r.mean():g},{r.min():g},{r.max():g}\n")


def _summary(config, compiled: Compiled, run_s, episodes, final_eval) -> dict:
    compile_s = compiled.seconds
    devices = compiled.sharding.mesh.devices.flat
    total = config.total_steps * config.num_seeds
    last100 = [float(e[-100:, 2].mean()) if len(e) else None for e in episodes]
    eval_means = [float(x) for x in final_eval.mean(axis=1)] if final_eval.size else []
    return {
        "env": config.env,
        "variant": config.variant,
        "num_seeds": config.num_seeds,
        "seeds": list(range(config.seed, config.seed + config.num_seeds)),
        "total_env_steps": total,
        "env_steps_per_seed": config.total_steps,
        "compile_s": round(compile_s, 3),
        "run_s": round(run_s, 3),
        "env_steps_per_s": round(total / run_s, 1),
        "episodes_per_seed": [len(e) for e in episodes],
        "last100_return_per_seed": last100,
        "eval_episodes": config.eval_episodes,
        "final_eval_return_per_seed": eval_means,
        "final_eval_return_mean": float(np.mean(eval_means)) if eval_means else None,
        "devices": [str(d) for d in devices],
        "jax_version": jax.__version__,
    }


def final_line(summary: dict) -> str:
    """The console's last line: steps, speed, compile time, final eval per seed."""
    evals = summary["final_eval_return_per_seed"]
    ev = ", ".join(f"{x:.1f}" for x in evals) if evals else "none"
    return (
        f"done: {summary['total_env_steps']:,} env steps in {summary['run_s']:.1f}s "
        f"({summary['env_steps_per_s']:,.0f} steps/s) + {summary['compile_s']:.1f}s compile | "
        f"final greedy eval per seed: {ev}"
    )
