"""Host-side reporting, for both drivers: episodes out of chunk outputs, the run directory's
files, console lines, the non-finite check and the summary."""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

EPISODE_FIELDS = ("run", "episode", "env_step", "length", "return")
"""``run`` is the run index ``0 .. num_seeds - 1``; its seed is ``summary.json["seeds"][run]``."""


def extract_episodes(
    ep_length: np.ndarray, ep_return: np.ndarray, first_vector_step: int, num_envs: int
) -> list[np.ndarray]:
    """Per seed, the episodes that ended in a chunk, in time order then env order.

    ``ep_length``/``ep_return``: ``[seeds, iters, vsteps, num_envs]`` (0 where no episode ended).
    Returns, per seed, an array ``[n, 3]`` of (env_step, length, return), ``env_step`` being the
    seed's env-step count at the end of the vector step in which the episode ended.
    """
    seeds = ep_length.shape[0]
    lengths = ep_length.reshape(seeds, -1, num_envs)
    returns = ep_return.reshape(seeds, -1, num_envs)
    out = []
    for s in range(seeds):
        t, e = np.nonzero(lengths[s])
        env_step = (first_vector_step + t + 1) * num_envs
        out.append(np.stack([env_step, lengths[s, t, e], returns[s, t, e]], axis=1))
    return out


def check_writable(run_dir: Path) -> None:
    """Create ``run_dir`` and prove a file can be written there, before any compute is spent."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise SystemExit(f"error: run directory {run_dir} is not writable: {err}") from None


STOPPED_FILE = "stopped.json"
"""Written in a run directory when the run stops before its end (Ctrl-C, ``stop_after_chunks``,
a non-finite value): ``{"reason": str, "chunk": int, "resumable": bool}``. Removed when the run
starts or resumes, so a run that has one is not running."""


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON atomically (temp file + rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


@dataclass
class EpisodeLog:
    """Accumulates episodes per seed; appends them to ``path`` (``episodes.csv``) if given."""

    path: Path | None
    num_seeds: int
    rows: list[list[np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rows = [[] for _ in range(self.num_seeds)]
        if self.path is not None:
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(EPISODE_FIELDS)

    def append(self, per_seed: list[np.ndarray]) -> None:
        """Add one chunk's episodes (``extract_episodes`` output)."""
        if self.path is not None:
            with self.path.open("a", newline="") as f:
                writer = csv.writer(f)
                for seed, eps in enumerate(per_seed):
                    start = self.count(seed)
                    for i, (env_step, length, ret) in enumerate(eps):
                        writer.writerow(
                            [seed, start + i + 1, int(env_step), int(length), f"{ret:g}"]
                        )
        for seed, eps in enumerate(per_seed):
            self.rows[seed].append(eps)

    def seed_array(self, seed: int) -> np.ndarray:
        """All episodes of ``seed`` so far: ``[n, 3]`` (env_step, length, return)."""
        parts = self.rows[seed]
        return np.concatenate(parts) if parts else np.zeros((0, 3))

    def count(self, seed: int) -> int:
        """Episodes of ``seed`` so far."""
        return sum(len(r) for r in self.rows[seed])


def window_line(
    chunk: int,
    num_chunks: int,
    env_step: int,
    window: list[np.ndarray],
    log: EpisodeLog,
    loss: float,
    seconds: float,
) -> str:
    """The notebook's report for one chunk, over all seeds: episodes so far, the last episode's
    length, mean [min, max] length and mean return of the episodes that ended in this chunk."""
    eps = np.concatenate(window) if window else np.zeros((0, 3))
    total_eps = sum(log.count(s) for s in range(log.num_seeds))
    head = f"chunk {chunk:>3}/{num_chunks} step {env_step:>8,}"
    loss_text = f"loss {loss:.4g}" if np.isfinite(loss) else "loss -"
    if len(eps) == 0:
        return f"{head} | no episode ended | {loss_text} | {seconds:.2f}s"
    lengths, returns = eps[:, 1], eps[:, 2]
    return (
        f"{head} | episodes {total_eps:>6} | last {int(lengths[-1]):>4} | length mean "
        f"{lengths.mean():7.2f} [{int(lengths.min())}, {int(lengths.max())}] | return mean "
        f"{returns.mean():8.2f} | {loss_text} | {seconds:.2f}s"
    )


PROBE_FIELDS = ("seed", "env_step", "probe", "action", "q")


def probe_rows(
    q_probe: np.ndarray, first_iteration: int, env_steps_per_iteration: int, points: int = 10
) -> list[tuple]:
    """About ``points`` evenly spaced samples of a chunk's Q-value traces as CSV rows
    (seed, env_step, probe, action, q). ``q_probe``: ``[seeds, iters, probes, actions]``, the
    Q-values after each iteration."""
    seeds, iters, probes, actions = q_probe.shape
    rows = []
    for i in range(iters - 1, -1, -max(1, iters // points))[::-1]:
        env_step = (first_iteration + i + 1) * env_steps_per_iteration
        for s, p, a in np.ndindex(seeds, probes, actions):
            rows.append((s, env_step, p, a, float(q_probe[s, i, p, a])))
    return rows


def append_csv(path: Path, rows: list[tuple], header: tuple[str, ...]) -> None:
    """Append ``rows`` to the CSV at ``path``, writing ``header`` first if the file is new."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(header)
        writer.writerows(rows)


def truncate_csv_after(path: Path, column: int, last: float) -> None:
    """Drop the rows of the CSV at ``path`` whose ``column`` exceeds ``last`` (for resumes)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if float(r[column]) <= last]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(kept)


# --------------------------------------------------------------------------- one reporter
# Both drivers report through these: the chunk statistics the agent core accumulates, the
# non-finite message, metrics.jsonl, the console line, evals.csv and summary.json.


class ChunkStats(NamedTuple):
    """Per seed, over a chunk's iterations that learned (from the agent's ``stats``)."""

    loss: np.ndarray  # f64[seeds], mean loss (nan where the chunk did not learn)
    q_mean: np.ndarray  # f64[seeds], mean Q(s, a)
    bad: list[int]  # run indices whose loss or parameters are not finite


def chunk_stats(stats: np.ndarray, params_finite: np.ndarray) -> ChunkStats:
    """From ``stats f32[seeds, 4]`` (loss sum, Q sum, iterations learned, non-finite losses;
    :class:`dqn_jax.agent.AgentState`) and ``params_finite bool[seeds]``."""
    stats = np.asarray(stats, np.float64).reshape(-1, 4)
    learned = stats[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = np.where(learned > 0, stats[:, 0] / learned, np.nan)
        q_mean = np.where(learned > 0, stats[:, 1] / learned, np.nan)
    ok = np.asarray(params_finite) & (stats[:, 3] == 0) & np.isfinite(stats[:, :2]).all(axis=1)
    return ChunkStats(loss, q_mean, [int(s) for s in np.nonzero(~ok)[0]])


def nonfinite_message(
    chunk: int, first_env_step: int, env_step: int, seeds: list[int], bad: list[int], last_good
) -> str:
    """The message a run stops with when run indices ``bad`` (seeds ``seeds[i]``) went NaN."""
    return (
        f"non-finite loss or parameters at chunk {chunk} (env steps {first_env_step:,}-"
        f"{env_step:,}) in seed(s) {', '.join(str(seeds[s]) for s in bad)} (run index {bad}); "
        f"{last_good}"
    )


def _floats(values) -> list:
    return [None if not np.isfinite(x) else float(x) for x in values]


def chunk_record(chunk: int, env_step: int, stats: ChunkStats, window, evaluation, seconds):
    """The JSONL record of one chunk: per seed the mean loss and Q of its learning iterations
    (null before learning starts), episodes and their mean return, evaluation mean (if
    evaluated at this chunk), wall time."""
    record = {
        "chunk": chunk,
        "env_step": env_step,
        "loss": _floats(stats.loss),
        "q_mean": _floats(stats.q_mean),
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


def eta(seconds: float) -> str:
    """``H:MM:SS``."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def write_evals(path: Path, evals: list[tuple[int, np.ndarray]]) -> None:
    """``evals.csv``: per evaluation point and run, mean/min/max greedy return."""
    with path.open("w") as f:
        f.write("run,env_step,mean_return,min_return,max_return\n")
        for env_step, returns in evals:
            for s in range(returns.shape[0]):
                r = returns[s]
                f.write(f"{s},{env_step},{r.mean():g},{r.min():g},{r.max():g}\n")


def summary(config, seeds, compile_s, run_s, episodes, final_eval, devices, **extra) -> dict:
    """``summary.json``: what ran, how fast, and the final greedy returns per seed; ``extra``
    keys (a backend's own) are appended."""
    import jax

    total = config.total_steps * config.num_seeds
    last100 = [float(e[-100:, 2].mean()) if len(e) else None for e in episodes]
    eval_means = [float(x) for x in final_eval.mean(axis=1)] if final_eval.size else []
    return {
        "env": config.env,
        "variant": config.variant,
        "backend": config.backend,
        "num_seeds": config.num_seeds,
        "seeds": list(seeds),
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
        **extra,
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


def progress_bar(total: int, enabled: bool):
    """A tqdm bar over ``total`` env steps (disabled: a no-op bar)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", unit_scale=True, disable=not enabled, leave=False)


class Reporter:
    """Reports a run chunk by chunk, the same for both drivers: ``episodes.csv`` (through its
    :class:`EpisodeLog`), ``metrics.jsonl`` (and TensorBoard), the console line with steps/s
    and ETA, the progress bar, ``report.html`` (:class:`dqn_jax.html_report.LiveReport`); then
    :meth:`finish` writes ``evals.csv``, ``summary.json``, ``episodes.png`` and the finished
    ``report.html``."""

    def __init__(
        self,
        config,
        seeds,
        out: Path | None,
        num_chunks: int,
        *,
        log=None,
        evals=None,
        start_step: int = 0,
        tb=None,
        progress: bool = True,
        echo=print,
    ):
        self.config, self.seeds, self.out, self.num_chunks = config, list(seeds), out, num_chunks
        self.log = log or EpisodeLog(out / "episodes.csv" if out else None, config.num_seeds)
        self.evals: list[tuple[int, np.ndarray]] = evals if evals is not None else []
        self.tb, self.progress, self.echo = tb, progress, echo
        self.start_step = start_step
        self.bar = progress_bar(config.total_steps, progress)
        self.bar.update(start_step)
        self.loop_start = time.perf_counter()
        self.html = None
        if out is not None:
            from dqn_jax.html_report import LiveReport

            (out / STOPPED_FILE).unlink(missing_ok=True)  # running again

            self.html = LiveReport(out, self.seeds, echo, config=config.to_dict())

    def check_finite(
        self, chunk: int, first_step: int, env_step: int, stats: ChunkStats, last_good: str
    ) -> None:
        """Raise :class:`NonFiniteError` (and close the bar and TensorBoard) if a seed broke."""
        if stats.bad:
            self.close(stopped=("non-finite values", chunk, False))
            message = nonfinite_message(
                chunk, first_step, env_step, self.seeds, stats.bad, last_good
            )
            raise NonFiniteError(message)

    def chunk(
        self,
        chunk: int,
        env_step: int,
        window,
        stats: ChunkStats,
        evaluation,
        seconds: float,
        steps: int,
    ) -> None:
        """Report one chunk that ended at ``env_step`` per seed after ``steps`` env steps per
        seed in ``seconds``; ``window`` is its episodes per seed, ``evaluation`` the periodic
        greedy returns ``[seeds, episodes]`` or None."""
        self.log.append(window)
        if evaluation is not None:
            self.evals.append((env_step, evaluation))
        record = chunk_record(chunk, env_step, stats, window, evaluation, seconds)
        log_metrics(self.out, self.tb, record)
        loss = float(np.nanmean(stats.loss)) if np.isfinite(stats.loss).any() else float("nan")
        line = window_line(chunk, self.num_chunks, env_step, window, self.log, loss, seconds)
        if evaluation is not None:
            line += f" | eval {evaluation.mean():.1f}"
        seeds = self.config.num_seeds
        rate = (env_step - self.start_step) * seeds / (time.perf_counter() - self.loop_start)
        left = (self.config.total_steps - env_step) * seeds / rate
        line += f" | {steps * seeds / seconds:,.0f} steps/s | ETA {eta(left)}"
        self.bar.update(steps)
        self.bar.write(line) if self.progress else self.echo(line)
        if self.html is not None:
            self.html.chunk()

    def episodes(self) -> list[np.ndarray]:
        """Every episode so far, per seed: ``[n, 3]`` (env_step, length, return)."""
        return [self.log.seed_array(s) for s in range(self.config.num_seeds)]

    def close(self, stopped: tuple[str, int, bool] | None = None) -> None:
        """Close the bar and TensorBoard; bring ``report.html`` up to date (a run that stops
        before :meth:`finish`). ``stopped``: ``(reason, chunk, resumable)`` of a run that stops
        here for good, recorded in :data:`STOPPED_FILE` so that its report says so."""
        self._close()
        if self.out is not None and stopped is not None:
            reason, chunk, resumable = stopped
            write_json(
                self.out / STOPPED_FILE,
                {"reason": reason, "chunk": int(chunk), "resumable": bool(resumable)},
            )
            self.html.write()  # the status line changed even if no chunk came since
        elif self.html is not None:
            self.html.flush()

    def _close(self) -> None:
        self.bar.close()
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    def finish(
        self,
        final_eval: np.ndarray,
        env_step: int,
        compile_s: float,
        run_s: float,
        devices,
        title: str,
        **extra,
    ) -> dict:
        """Write ``evals.csv``, ``summary.json`` and ``episodes.png``, print the final line;
        returns the summary."""
        self._close()
        self.evals.append((env_step, final_eval))
        episodes = self.episodes()
        result = summary(
            self.config, self.seeds, compile_s, run_s, episodes, final_eval, devices, **extra
        )
        if self.out is not None:
            write_evals(self.out / "evals.csv", self.evals)
            write_json(self.out / "summary.json", result)
            from dqn_jax.plots import plot_episodes

            plot_episodes(episodes, self.out / "episodes.png", title)
            self.html.write()
        self.echo(final_line(result))
        return result


class NonFiniteError(RuntimeError):
    """Raised when a loss or the parameters of some seed stop being finite."""


class RunResult(NamedTuple):
    state: Any  # final train state (leading seed axis)
    episodes: list[np.ndarray]  # per seed: [n, 3] (env_step, length, return)
    eval_returns: np.ndarray  # f32[num_seeds, eval_episodes] at the end
    summary: dict


def chunk_sizes(num_iterations: int, num_chunks: int) -> list[int]:
    """Split iterations into ``num_chunks`` chunks of at most two distinct sizes (two compiles)."""
    base, extra = divmod(num_iterations, num_chunks)
    return [base + 1] * extra + [base] * (num_chunks - extra)
