"""Host-side reporting: episodes out of chunk outputs, the run directory's files, console lines."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EPISODE_FIELDS = ("seed", "episode", "env_step", "length", "return")


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
    if len(eps) == 0:
        return f"{head} | no episode ended | loss {loss:.4g} | {seconds:.2f}s"
    lengths, returns = eps[:, 1], eps[:, 2]
    return (
        f"{head} | episodes {total_eps:>6} | last {int(lengths[-1]):>4} | length mean "
        f"{lengths.mean():7.2f} [{int(lengths.min())}, {int(lengths.max())}] | return mean "
        f"{returns.mean():8.2f} | loss {loss:.4g} | {seconds:.2f}s"
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
