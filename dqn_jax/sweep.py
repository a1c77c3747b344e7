"""Sweeps: a grid of hyperparameter values x seeds as one compiled program, and its statistics.

``--sweep lr=1e-4,3e-4,1e-3 --sweep gamma=0.99,0.995 --num-seeds 16`` is 6 grid points x 16
seeds = 96 runs, vmapped (and sharded over devices) in one compile: the swept values are traced
per run (see :data:`dqn_jax.agent.SWEEPABLE`). Every grid point uses the same seeds.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from dqn_jax.config import Config, ConfigError

# Score at which a task counts as solved (fraction of seeds solved in the sweep, run report, suite
# and tuning tables): Gymnasium's reward thresholds for these ids.
SOLVED_AT = {
    "CartPole-v1": 475.0,
    "CartPole-v0": 195.0,
    "Acrobot-v1": -100.0,
    "MountainCar-v0": -110.0,
    "LunarLander-v3": 200.0,
}


def parse_sweep(items: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """``["lr=1e-4,3e-4", "gamma=0.99"]`` -> ``{"lr": (1e-4, 3e-4), "gamma": (0.99,)}``."""
    from dqn_jax.agent import SWEEPABLE

    grid: dict[str, tuple[float, ...]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values.strip():
            raise ConfigError(f"--sweep {item!r}: expected NAME=V1,V2,...")
        if name not in SWEEPABLE:
            raise ConfigError(f"--sweep {name}: not sweepable; sweepable: {', '.join(SWEEPABLE)}")
        try:
            grid[name] = tuple(float(v) for v in values.split(","))
        except ValueError:
            raise ConfigError(f"--sweep {item!r}: values must be numbers") from None
    return grid


def grid_points(grid: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    """Every combination of the grid's values, first name slowest."""
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]


def expand_points(config: Config, points: Sequence[Mapping[str, float]]):
    """``(run_config, table)`` for ``points`` (each a value per traced name, all with the same
    names) x ``config.num_seeds`` seeds: ``run_config`` has ``num_seeds = points * seeds`` (one
    entry per run), ``table`` maps each name to ``f32[runs]``. Each point is validated as a
    config of its own, so a bad value fails with the usual message before anything compiles."""
    for point in points:
        config.replace(**{k: _as_field(config, k, v) for k, v in point.items()})
    seeds = config.num_seeds
    names = list(points[0]) if points else []
    table = {name: np.repeat([p[name] for p in points], seeds).astype(np.float32) for name in names}
    return config.replace(num_seeds=len(points) * seeds), table


def expand(config: Config, grid: Mapping[str, Sequence[float]]):
    """``(run_config, table, points)`` for a sweep of ``grid`` x ``config.num_seeds`` seeds
    (:func:`expand_points` of the grid's points)."""
    points = grid_points(grid)
    run_config, table = expand_points(config, points)
    return run_config, table, points


def saved_sweep(run_dir: str | Path, config: Config) -> tuple[dict[str, np.ndarray], int]:
    """``(table, seeds per point)`` of the sweep whose run directory is ``run_dir`` (from its
    ``sweep.json``; ``config`` is the run's, with one seed per run), ``({}, 1)`` for a plain
    run. ``SystemExit`` with a one-line message where ``sweep.json`` is damaged."""
    path = Path(run_dir) / "sweep.json"
    if not path.exists():
        return {}, 1
    try:
        saved = json.loads(path.read_text())
        seeds, grid = len(saved["seeds"]), {k: tuple(v) for k, v in saved["grid"].items()}
        _, table, points = expand(config.replace(num_seeds=seeds), grid)
    except (ValueError, KeyError, TypeError, AttributeError, ConfigError):
        raise SystemExit(f"error: {path} is damaged: no readable grid and seeds") from None
    if len(points) * seeds != config.num_seeds:
        raise SystemExit(
            f"error: {path}: {len(points)} grid points x {seeds} seeds is not the run's "
            f"num_seeds={config.num_seeds}"
        )
    return table, seeds


def _as_field(config: Config, name: str, value: float):
    return int(value) if isinstance(getattr(config, name), int) else value


def train_points(
    config: Config,
    points: Sequence[Mapping[str, float]],
    run_dir: str | Path | None = None,
    *,
    progress: bool = True,
    echo=print,
    devices=None,
):
    """Train ``points`` x ``config.num_seeds`` seeds as one compiled program (every point sees
    the same seeds); ``(result, finals f32[points, seeds])``, ``finals`` the mean final greedy
    evaluation return of each run. ``run_dir``: the usual run directory, or None for none."""
    from dqn_jax.device_loop import make_train
    from dqn_jax.run import train

    if config.eval_episodes < 1:
        raise ConfigError(
            f"a sweep or search needs --eval-episodes >= 1 (got {config.eval_episodes}): it "
            "compares its points by their final greedy evaluation return"
        )
    seeds = config.num_seeds
    run_config, table = expand_points(config, points)
    trainer = make_train(run_config, sweep_table=table, seeds_per_point=seeds)
    result = train(
        run_config, run_dir, trainer=trainer, progress=progress, echo=echo, devices=devices
    )
    return result, result.eval_returns.mean(axis=1).reshape(len(points), seeds)


def run_sweep(
    config: Config,
    grid: Mapping[str, Sequence[float]],
    run_dir: str | Path | None = None,
    *,
    progress: bool = True,
    echo=print,
    devices=None,
):
    """Run the sweep; returns ``(result, rows)`` where ``rows`` holds one aggregate per point.

    Writes the usual run directory (``seed`` in ``episodes.csv`` is the run index) plus
    ``sweep.json`` (points, seeds, per-run final evals), ``sweep_table.txt`` and a
    ``report.html`` that compares the grid points.
    """
    from dqn_jax import distributed, stats

    points = grid_points(grid)
    seeds = config.num_seeds
    result, finals = train_points(
        config, points, run_dir, progress=progress, echo=echo, devices=devices
    )
    threshold = SOLVED_AT.get(config.env)
    rows = {}
    for point, scores in zip(points, finals, strict=True):
        label = ", ".join(f"{k}={v:g}" for k, v in point.items())
        rows[label] = stats.aggregate(scores, threshold=threshold)
    text = stats.format_table(rows)
    echo(text)
    if run_dir is not None and distributed.is_main():
        out = Path(run_dir)
        (out / "sweep_table.txt").write_text(text + "\n")
        (out / "sweep.json").write_text(
            json.dumps(
                {
                    "grid": {k: list(v) for k, v in grid.items()},
                    "points": points,
                    "seeds": list(range(config.seed, config.seed + seeds)),
                    "run_index": "point * seeds + seed_offset",
                    "final_eval_return": finals.tolist(),
                    "solved_at": threshold,
                },
                indent=2,
            )
            + "\n"
        )
        from dqn_jax.html_report import write_report

        write_report(out)  # report.html again, now comparing the grid points
    return result, rows
