"""A run's report in the browser: ``RUN_DIR/report.html``, one self-contained page (bokeh's
inline resources, no server, no network) drawn from the run directory's files.

Episodes (length and return per episode, per run and the trailing 100-episode means), greedy
evaluations with their IQM and 95% CI over seeds, loss and mean Q per chunk, the probe states'
Q-values, a sweep's grid points compared, the summary and the config. Interactive: hover, pan,
zoom, and a checkbox per run that shows or hides it in every plot.

:func:`read_run` reads the files (:class:`RunFiles`); pure functions turn them into the plotted
series (:func:`plot_data`) and the page's tables (:func:`slots`); :func:`render` puts both into
the page's :func:`skeleton` (the bokeh layout, built once per :class:`Shape` of run);
:func:`write_report` writes the page atomically. :class:`LiveReport` decides when a training
loop rewrites it (within a share of the loop's time, :func:`due`).
"""

from __future__ import annotations

import contextlib
import functools
import html
import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dqn_jax.config import RunDirError, load_run_config
from dqn_jax.plots import (
    iqm_band,
    point_label,
    q_probe_traces,
    read_episodes,
    read_rows,
    read_sweep,
    sweep_curves,
)
from dqn_jax.report import STOPPED_FILE

REPORT_FILE = "report.html"
WINDOW = 100
"""Episodes in the trailing means (the notebook's 100-episode window)."""
MAX_POINTS = 4000
"""Most points drawn per line (longer series are thinned evenly; statistics use every point)."""
BUDGET = 0.05
"""Share of a training loop's wall time that rewriting the report may take."""
REWRITE_S = 0.05
"""Assumed cost of the first rewrite, before one was measured (the layout aside)."""


@dataclass(frozen=True)
class RunFiles:
    """What a run directory holds, read once (see :func:`read_run`)."""

    run_dir: Path
    config: dict
    episodes: list[np.ndarray]  # per run: [n, 3] (env_step, length, return)
    metrics: list[dict]  # metrics.jsonl records, one per chunk
    eval_steps: np.ndarray  # i64[points]: env steps per seed of the greedy evaluations
    eval_returns: np.ndarray  # f64[runs, points]: mean greedy return (nan: not evaluated)
    summary: dict | None  # summary.json (None while the run is in progress)
    probes: np.ndarray | None  # q_probes.csv rows [n, 5]: seed, env_step, probe, action, q
    sweep: dict | None  # sweep.json
    seeds: list[int]  # the seed of each run
    stopped: dict | None = None  # stopped.json: a run that stopped before its end

    @property
    def num_runs(self) -> int:
        return len(self.episodes)

    @property
    def finished(self) -> bool:
        return self.summary is not None


class Group(NamedTuple):
    """Runs aggregated together: every seed of a plain run, or one grid point of a sweep."""

    label: str
    runs: list[int]


# --------------------------------------------------------------------------- reading


def read_metrics(path: Path) -> list[dict]:
    """The records of ``metrics.jsonl`` (``[]`` if absent). A last line without its newline
    (being written by another process) is left out; any other bad line is
    :class:`RunDirError`."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path} is damaged: {err}") from None
    records = []
    # the piece after the last newline is empty, or a record still being written
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "env_step" not in record:
                raise ValueError("expected an object with env_step")
        except ValueError as err:
            raise RunDirError(f"{path} is damaged: line {number}: {err}") from None
        records.append(record)
    return records


def eval_matrix(points: list[tuple[int, list[float]]], num_runs: int):
    """``(steps i64[P], returns f64[num_runs, P])`` from ``(env_step, per-run means)`` pairs
    (sorted by step; a later pair for the same step wins; NaN where a run has no value)."""
    steps = np.array(sorted({int(step) for step, _ in points}), np.int64)
    returns = np.full((num_runs, len(steps)), np.nan)
    for step, values in points:
        column = int(np.searchsorted(steps, step))
        for run, value in enumerate(values[:num_runs]):
            returns[run, column] = np.nan if value is None else float(value)
    return steps, returns


def read_evals(run_dir: Path, metrics: list[dict], num_runs: int):
    """``(steps, returns)`` (:func:`eval_matrix`) of the greedy evaluations: from ``evals.csv``
    once the run has finished (it holds the final evaluation), else from the periodic ones in
    ``metrics.jsonl``."""
    path = run_dir / "evals.csv"
    if not path.exists():
        return eval_matrix([(r["env_step"], r["eval"]) for r in metrics if "eval" in r], num_runs)
    rows = read_rows(path, 5)
    points = []
    for step in np.unique(rows[:, 1]):
        at = rows[rows[:, 1] == step]
        values = [None] * num_runs
        for run, mean in zip(at[:, 0].astype(int), at[:, 2], strict=True):
            if 0 <= run < num_runs:
                values[run] = mean
        points.append((int(step), values))
    return eval_matrix(points, num_runs)


def _read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
    except (OSError, ValueError) as err:
        raise RunDirError(f"{path} is damaged: {err}") from None
    return data


def run_seeds(config: dict, summary, sweep, seeds=None) -> list[int]:
    """The seed of each run: from ``summary.json``, else ``sweep.json`` (every grid point sees
    the same seeds), else ``seeds`` (the training loop's own list), else ``seed + run``."""
    n = config["num_seeds"]
    if summary is not None and len(summary.get("seeds") or []) == n:
        return [int(s) for s in summary["seeds"]]
    if sweep is not None and sweep["seeds"]:
        return [int(sweep["seeds"][i % len(sweep["seeds"])]) for i in range(n)]
    if seeds is not None and len(seeds) == n:
        return [int(s) for s in seeds]
    return [config["seed"] + i for i in range(n)]


def read_run(run_dir: str | Path, seeds=None) -> RunFiles:
    """Everything the report shows, from ``run_dir``'s files (:class:`RunDirError` naming the
    file if the directory, its config or its episodes are missing or damaged). ``seeds``: the
    seed of each run when the caller knows them (a sweep in progress has no ``sweep.json``)."""

    run_dir = Path(run_dir)
    config = load_run_config(run_dir).to_dict()
    episodes = read_episodes(run_dir, config["num_seeds"])
    metrics = read_metrics(run_dir / "metrics.jsonl")
    eval_steps, eval_returns = read_evals(run_dir, metrics, config["num_seeds"])
    summary = _read_json(run_dir / "summary.json")
    probes = None
    if (run_dir / "q_probes.csv").exists():
        probes = read_rows(run_dir / "q_probes.csv", 5)
    sweep = read_sweep(run_dir)
    if sweep is not None and len(sweep["points"]) * len(sweep["seeds"]) != config["num_seeds"]:
        raise RunDirError(
            f"{run_dir / 'sweep.json'}: {len(sweep['points'])} grid points x "
            f"{len(sweep['seeds'])} seeds is not the run's num_seeds={config['num_seeds']}"
        )
    return RunFiles(
        run_dir,
        config,
        episodes,
        metrics,
        eval_steps,
        eval_returns,
        summary,
        probes,
        sweep,
        run_seeds(config, summary, sweep, seeds),
        None if summary is not None else _read_json(run_dir / STOPPED_FILE),
    )


# --------------------------------------------------------------------------- data


def trailing_mean(values: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Mean of the trailing ``window`` values at each index (fewer at the start), ``f64[n]``."""
    values = np.asarray(values, np.float64)
    sums = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(1, len(values) + 1)
    start = np.maximum(index - window, 0)
    return (sums[index] - sums[start]) / (index - start)


def thin(n: int, limit: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most ``limit`` of ``n`` points, evenly spaced, first and last kept."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def episode_columns(episodes: np.ndarray, window: int = WINDOW) -> dict[str, np.ndarray]:
    """One run's episodes as plot columns, each ``[n]`` (thinned to :data:`MAX_POINTS` after the
    means are taken): ``episode`` (1-based), ``env_step``, ``length``, ``return`` and their
    trailing ``window``-episode means ``length_mean``, ``return_mean``."""
    episodes = np.asarray(episodes, np.float64).reshape(-1, 3)
    columns = {
        "episode": np.arange(1, len(episodes) + 1),
        "env_step": episodes[:, 0].astype(np.int64),
        "length": episodes[:, 1].astype(np.int64),
        "return": episodes[:, 2],
        "length_mean": trailing_mean(episodes[:, 1], window),
        "return_mean": trailing_mean(episodes[:, 2], window),
    }
    keep = thin(len(episodes))
    return {k: v[keep] for k, v in columns.items()}


def metric_columns(metrics: list[dict], run: int) -> dict[str, np.ndarray]:
    """Run ``run``'s per-chunk ``env_step``, ``loss`` and ``q_mean`` (NaN before learning)."""

    def value(record, name):
        values = record.get(name) or []
        v = values[run] if run < len(values) else None
        return np.nan if v is None else float(v)

    return {
        "env_step": np.array([r["env_step"] for r in metrics], np.int64),
        "loss": np.array([value(r, "loss") for r in metrics]),
        "q_mean": np.array([value(r, "q_mean") for r in metrics]),
    }


def groups(num_runs: int, sweep: dict | None) -> list[Group]:
    """One group per sweep grid point (its seeds), or one of all ``num_runs`` runs."""
    if sweep is not None:
        seeds = len(sweep["seeds"])
        return [
            Group(point_label(point), list(range(p * seeds, (p + 1) * seeds)))
            for p, point in enumerate(sweep["points"])
        ]
    return [Group("all seeds", list(range(num_runs)))]


def run_labels(seeds: list[int], sweep: dict | None) -> list[str]:
    """A short name per run, from its seed: ``seed 3``, in a sweep ``lr=0.001 | seed 3``;
    ``run i (seed s)`` where seeds repeat (a sweep in progress)."""
    if sweep is not None:
        return [f"{g.label} | seed {seeds[r]}" for g in groups(len(seeds), sweep) for r in g.runs]
    if len(set(seeds)) < len(seeds):
        return [f"run {r} (seed {s})" for r, s in enumerate(seeds)]
    return [f"seed {s}" for s in seeds]


def latest_evals(files: RunFiles) -> tuple[np.ndarray, np.ndarray]:
    """Per run, the latest greedy evaluation's mean return and its env step (NaN / -1: none)."""
    value = np.full(files.num_runs, np.nan)
    step = np.full(files.num_runs, -1, np.int64)
    for run in range(files.num_runs):
        done = np.nonzero(np.isfinite(files.eval_returns[run]))[0]
        if len(done):
            value[run] = files.eval_returns[run, done[-1]]
            step[run] = files.eval_steps[done[-1]]
    return value, step


def run_rows(files: RunFiles, window: int = WINDOW) -> list[dict]:
    """The runs table, one dict per run: ``run``, ``seed``, ``label``, ``episodes``,
    ``last_mean`` (mean return of its last ``window`` episodes, None before the first),
    ``eval`` and ``eval_step`` (its latest greedy evaluation: the final one once finished;
    None / -1 before the first)."""
    evals, steps = latest_evals(files)
    labels = run_labels(files.seeds, files.sweep)
    rows = []
    for run, eps in enumerate(files.episodes):
        rows.append(
            {
                "run": run,
                "seed": files.seeds[run],
                "label": labels[run],
                "episodes": len(eps),
                "last_mean": float(eps[-window:, 2].mean()) if len(eps) else None,
                "eval": float(evals[run]) if np.isfinite(evals[run]) else None,
                "eval_step": int(steps[run]),
            }
        )
    return rows


def group_aggregates(files: RunFiles, rows: list[dict]) -> list[tuple[Group, dict, dict]]:
    """Per group, :func:`dqn_jax.stats.aggregate` of its runs' latest greedy returns and of
    their last-``WINDOW`` means (``{}`` where no run has one yet)."""
    from dqn_jax import stats

    out = []
    for group in groups(files.num_runs, files.sweep):
        parts = []
        for key in ("eval", "last_mean"):
            scores = [rows[r][key] for r in group.runs if rows[r][key] is not None]
            parts.append(stats.aggregate(scores) if scores else {})
        out.append((group, *parts))
    return out


def eval_bands(files: RunFiles) -> list[tuple[Group, tuple[np.ndarray, ...]]]:
    """Per group, ``(iqm, low, high)`` over its runs of the greedy returns at each evaluation
    (``f64[points]``, :func:`dqn_jax.plots.iqm_band`)."""

    return [
        (g, iqm_band(files.eval_returns[g.runs], n_resamples=1000))
        for g in groups(files.num_runs, files.sweep)
    ]


def status(files: RunFiles) -> tuple[bool, str]:
    """``(finished, one line)``: how far the run got."""
    c = files.config
    if files.summary is not None:
        s = files.summary
        return True, (
            f"finished: {s.get('total_env_steps', 0):,} env steps ({c['num_seeds']} runs x "
            f"{c['total_steps']:,}) in {s.get('run_s', 0):.1f} s "
            f"({s.get('env_steps_per_s', 0):,.0f} steps/s) + {s.get('compile_s', 0):.1f} s "
            "compile"
        )
    last = files.metrics[-1] if files.metrics else {"chunk": 0, "env_step": 0}
    done = f"{last['env_step']:,} of {c['total_steps']:,} env steps per seed"
    if files.stopped is not None:
        stop = files.stopped
        line = (
            f"stopped after chunk {stop['chunk']} of {c['num_chunks']} ({stop['reason']}), {done}"
        )
        if stop.get("resumable"):
            line += f"; resume with: dqn-jax train --resume {files.run_dir}"
        return False, line
    return False, f"in progress: chunk {last['chunk']} of {c['num_chunks']} done, {done}"


# --------------------------------------------------------------------------- plot data
# Building bokeh models in Python is slow (most of a rewrite's cost), so the layout is built
# once per :class:`Shape` (:func:`skeleton`) with a placeholder in every column of its data
# sources, and each rewrite puts the numbers (:func:`plot_data`) in their place.

SOURCE_COLUMNS = {
    "episodes": ("episode", "env_step", "length", "return", "length_mean", "return_mean"),
    "evals": ("env_step", "value"),
    "band": ("env_step", "iqm", "low", "high"),
    "learning": ("env_step", "loss", "q_mean"),
    "probe": ("env_step", "q"),
    "dots": ("point", "value", "seed"),
    "points": ("point", "iqm", "low", "high"),
}
"""The columns of each kind of data source (:func:`plot_data` names the sources)."""


def _finite_rows(columns: dict) -> dict[str, list]:
    """``columns`` as JSON-ready lists, keeping the rows whose numbers are all finite (a line
    then skips the points before learning started, and no NaN has to travel as JSON)."""
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    keep = np.ones(len(next(iter(arrays.values()))), bool)
    for values in arrays.values():
        if values.dtype.kind == "f":
            keep &= np.isfinite(values)
    return {k: v[keep].tolist() for k, v in arrays.items()}


def plot_data(files: RunFiles) -> dict[str, dict[str, list]]:
    """Every plotted series, by data source name (kinds and columns: :data:`SOURCE_COLUMNS`):
    ``episodes-{run}``, ``evals-{run}`` (greedy returns), ``iqm-{group}`` (their IQM and 95%
    CI over the group's seeds), ``learning-{run}``, ``probe-{run}-{state}`` (max_a Q), and for a
    sweep ``curve-{point}`` (training return IQM), ``final-dots``, ``final-iqm``. Each column is
    a list; rows with a non-finite number are left out."""
    data: dict[str, dict] = {}
    for run, eps in enumerate(files.episodes):
        data[f"episodes-{run}"] = episode_columns(eps)
        keep = np.isfinite(files.eval_returns[run])
        data[f"evals-{run}"] = {
            "env_step": files.eval_steps[keep],
            "value": files.eval_returns[run, keep],
        }
        data[f"learning-{run}"] = metric_columns(files.metrics, run)
    for g, (_, (iqm, low, high)) in enumerate(eval_bands(files)):
        keep = np.isfinite(iqm)
        data[f"iqm-{g}"] = {
            "env_step": files.eval_steps[keep],
            "iqm": iqm[keep],
            "low": low[keep],
            "high": high[keep],
        }
    if files.probes is not None and len(files.probes):
        for (run, probe), (steps, best) in q_probe_traces(files.probes).items():
            data[f"probe-{run}-{probe}"] = {"env_step": steps.astype(np.int64), "q": best}
    if files.sweep is not None:
        data.update(sweep_data(files))
    return {name: _finite_rows(cols) for name, cols in data.items()}


def sweep_data(files: RunFiles) -> dict[str, dict]:
    """A sweep's series: per grid point its training-return IQM curve with the 95% CI band
    (``curve-{point}``, :func:`dqn_jax.plots.sweep_curves`), every run's final greedy return
    (``final-dots``) and each point's IQM and CI of them (``final-iqm``)."""

    curves, x = sweep_curves(files.sweep, files.episodes, files.config["total_steps"])
    data = {}
    for p, runs in enumerate(curves.values()):
        iqm, low, high = iqm_band(runs)
        data[f"curve-{p}"] = {"env_step": x, "iqm": iqm, "low": low, "high": high}
    rows = run_rows(files)
    dots: dict[str, list] = {"point": [], "value": [], "seed": []}
    points: dict[str, list] = {"point": [], "iqm": [], "low": [], "high": []}
    for group, final, _ in group_aggregates(files, rows):
        for r in group.runs:
            if rows[r]["eval"] is not None:
                dots["point"].append(group.label)
                dots["value"].append(rows[r]["eval"])
                dots["seed"].append(rows[r]["seed"])
        if final:
            points["point"].append(group.label)
            points["iqm"].append(final["iqm"])
            points["low"].append(final["iqm_ci"][0])
            points["high"].append(final["iqm_ci"][1])
    data["final-dots"], data["final-iqm"] = dots, points
    return data


# --------------------------------------------------------------------------- plots


class Shape(NamedTuple):
    """What the plots are made of, fixed for a run (a sweep's grid points appear at its end):
    the bokeh layout is built once per shape."""

    runs: tuple[str, ...]  # a label per run
    groups: tuple[tuple[str, int], ...]  # (label, runs) per group
    probes: int  # probe states traced
    sweep: bool


def shape(seeds: list[int], probe_states: int, sweep: dict | None) -> Shape:
    """The :class:`Shape` of the report of runs with ``seeds`` (and a sweep's grid)."""
    return Shape(
        tuple(run_labels(seeds, sweep)),
        tuple((g.label, len(g.runs)) for g in groups(len(seeds), sweep)),
        probe_states,
        sweep is not None,
    )


def shape_of(files: RunFiles) -> Shape:
    """The :class:`Shape` of ``files``' report."""
    return shape(files.seeds, files.config["probe_states"], files.sweep)


def _palette(n: int) -> list[str]:
    from bokeh.palettes import Category10_10, Turbo256

    if n <= 10:
        return list(Category10_10[:n])
    return [Turbo256[int(i)] for i in np.linspace(20, 235, n)]


def run_colors(shape: Shape) -> list[str]:
    """A color per run; in a sweep, each grid point's color in a shade per seed (lighter for
    later seeds), so a point's runs read as one family."""
    if len(shape.groups) == 1:
        return _palette(len(shape.runs))
    colors = []
    for base, (_, n) in zip(_palette(len(shape.groups)), shape.groups, strict=True):
        rgb = np.array([int(base[i : i + 2], 16) for i in (1, 3, 5)], np.float64)
        for k in range(n):
            shade = rgb + (255 - rgb) * 0.55 * k / max(n - 1, 1)
            colors.append("#" + "".join(f"{int(round(c)):02x}" for c in shade))
    return colors


def _figure(title: str, x_label: str, y_label: str, x_range=None):
    from bokeh.models import FactorRange, NumeralTickFormatter, Title
    from bokeh.plotting import figure

    extra = {}
    if x_range is not None:
        extra["x_range"] = FactorRange(*x_range) if isinstance(x_range, list) else x_range
    fig = figure(
        title=Title(text=title, text_font_size="12pt"),
        x_axis_label=x_label,
        y_axis_label=y_label,
        height=330,
        sizing_mode="stretch_width",
        tools="pan,box_zoom,wheel_zoom,reset,save",
        **extra,
    )
    fig.toolbar.logo = None
    if x_label.startswith("env steps"):
        fig.xaxis.formatter = NumeralTickFormatter(format="0,0")
    return fig


def _hover(fig, renderers, tooltips) -> None:
    from bokeh.models import HoverTool

    fig.add_tools(HoverTool(renderers=renderers, tooltips=tooltips))


def _legend(fig, place: str = "top_left") -> None:
    """Style ``fig``'s legend (a click hides an entry) and place it: inside at ``place``, or
    beside the plot for ``"right"`` (the full-width plots, whose data fill every corner)."""
    if place == "right":
        legend = fig.legend[0]
        fig.center = [r for r in fig.center if r is not legend]
        fig.add_layout(legend, "right")
    else:
        fig.legend.location = place
    fig.legend.click_policy = "hide"
    fig.legend.label_text_font_size = "8pt"
    fig.legend.background_fill_alpha = 0.7
    fig.legend.spacing = 0
    fig.legend.padding = 4


CI = ("95% CI", "[@low{0.00}, @high{0.00}]")
STEP = ("env step", "@env_step{0,0}")


class _Builder:
    """Builds the layout of one :class:`Shape`: its data sources by name, each run's
    renderers (for the run checkboxes), the roots by name."""

    def __init__(self, shape: Shape):
        self.shape = shape
        self.sources: dict = {}
        self.per_run: list[list] = [[] for _ in shape.runs]
        self.colors = run_colors(shape)
        self.legend = len(shape.runs) <= 10

    def source(self, name: str, kind: str):
        """The data source ``name`` (of :data:`SOURCE_COLUMNS` ``kind``), a placeholder in
        each column."""
        from bokeh.models import ColumnDataSource

        if name not in self.sources:
            columns = {c: [f"@@{name}:{c}@@"] for c in SOURCE_COLUMNS[kind]}
            self.sources[name] = ColumnDataSource(columns, name=name)
        return self.sources[name]

    def run_legend(self, run: int) -> dict:
        return {"legend_label": self.shape.runs[run]} if self.legend else {}

    def episodes(self):
        """Steps and return per episode: each run's raw values (thin) and trailing mean."""
        from bokeh.layouts import row

        thick = f"thick: {WINDOW}-episode mean"
        f_len = _figure(f"Steps per episode (thin: each episode, {thick})", "episode", "steps")
        f_ret = _figure(
            f"Return per episode (thin: each episode, {thick})",
            "episode",
            "return",
            x_range=f_len.x_range,
        )
        for fig, name, fmt in ((f_len, "length", "0"), (f_ret, "return", "0.00")):
            means = []
            for run, label in enumerate(self.shape.runs):
                source, color = self.source(f"episodes-{run}", "episodes"), self.colors[run]
                legend = self.run_legend(run)
                raw = fig.line("episode", name, source=source, color=color, alpha=0.3, **legend)
                mean = fig.line(
                    "episode",
                    f"{name}_mean",
                    source=source,
                    color=color,
                    width=2.2,
                    name=label,
                    **legend,
                )
                self.per_run[run] += [raw, mean]
                means.append(mean)
            tips = [
                ("", "$name"),
                ("episode", "@episode"),
                STEP,
                (name, f"@{name}{{{fmt}}}"),
                (f"{WINDOW}-ep mean", f"@{name}_mean{{0.00}}"),
            ]
            _hover(fig, means, tips)
            if self.legend:
                _legend(fig)
        return row(f_len, f_ret, sizing_mode="stretch_width", name="episodes")

    def evals(self):
        """Greedy evaluation returns per run with each group's IQM and 95% CI over seeds."""
        fig = _figure(
            "Greedy evaluation return: each run (dots), IQM over seeds with its 95% CI (bars)",
            "env steps per seed",
            "mean greedy return",
        )
        dots = []
        for run, label in enumerate(self.shape.runs):
            source, color = self.source(f"evals-{run}", "evals"), self.colors[run]
            legend = self.run_legend(run)
            line = fig.line("env_step", "value", source=source, color=color, alpha=0.5, **legend)
            dot = fig.scatter(
                "env_step",
                "value",
                source=source,
                color=color,
                size=7,
                alpha=0.8,
                name=label,
                **legend,
            )
            self.per_run[run] += [line, dot]
            dots.append(dot)
        _hover(fig, dots, [("", "$name"), STEP, ("return", "@value{0.00}")])
        colors = ["black"] if len(self.shape.groups) == 1 else _palette(len(self.shape.groups))
        marks = []
        for g, ((label, n), color) in enumerate(zip(self.shape.groups, colors, strict=True)):
            source = self.source(f"iqm-{g}", "band")
            name = f"IQM, 95% CI: {label} (n={n})"
            style = {"source": source, "color": color, "legend_label": name}
            fig.varea("env_step", "low", "high", alpha=0.12, **style)
            fig.segment("env_step", "low", "env_step", "high", width=2, **style)
            fig.line("env_step", "iqm", width=2.5, **style)
            marks.append(
                fig.scatter("env_step", "iqm", size=10, marker="diamond", name=label, **style)
            )
        _hover(fig, marks, [("IQM", "$name"), STEP, ("IQM", "@iqm{0.00}"), CI])
        _legend(fig, "right")
        fig.name = "evals"
        return fig

    def learning(self, x_range):
        """Mean loss and mean Q(s, a) of each chunk's learning iterations, per run."""
        from bokeh.layouts import row

        f_loss = _figure("Loss (mean over each chunk)", "env steps per seed", "loss", x_range)
        f_q = _figure("Mean Q(s, a) of the learning batches", "env steps per seed", "Q", x_range)
        for fig, name in ((f_loss, "loss"), (f_q, "q_mean")):
            dots = []
            for run, label in enumerate(self.shape.runs):
                style = {
                    "source": self.source(f"learning-{run}", "learning"),
                    "color": self.colors[run],
                }
                style.update(self.run_legend(run))
                line = fig.line("env_step", name, width=1.6, **style)
                dot = fig.scatter("env_step", name, size=5, name=label, **style)
                self.per_run[run] += [line, dot]
                dots.append(dot)
            _hover(fig, dots, [("", "$name"), STEP, (name, f"@{name}{{0.0000}}")])
            if self.legend:  # Q rises through training; the loss starts low
                _legend(fig, "bottom_right" if name == "q_mean" else "top_right")
        return row(f_loss, f_q, sizing_mode="stretch_width", name="learning")

    def probes(self, x_range):
        """``max_a Q(s, a)`` of each probe state: a color per state, every run (the first
        bold)."""
        fig = _figure(
            "Q-values of the fixed probe states: max_a Q(s, a) (bold: the first run)",
            "env steps per seed",
            "max_a Q(s, a)",
            x_range,
        )
        colors = _palette(self.shape.probes)
        lines = []
        for run, label in enumerate(self.shape.runs):
            for probe in range(self.shape.probes):
                first = run == 0
                line = fig.line(
                    "env_step",
                    "q",
                    source=self.source(f"probe-{run}-{probe}", "probe"),
                    color=colors[probe],
                    width=2.2 if first else 1,
                    alpha=1.0 if first else 0.4,
                    name=f"state {probe + 1}, {label}",
                    **({"legend_label": f"state {probe + 1}"} if first else {}),
                )
                self.per_run[run].append(line)
                lines.append(line)
        _hover(fig, lines, [("", "$name"), STEP, ("max Q", "@q{0.000}")])
        _legend(fig, "right")
        fig.name = "probes"
        return fig

    def sweep(self):
        """The grid points compared: training-return IQM per point (95% CI band), and each
        point's final greedy returns (dots) with their IQM and CI."""
        from bokeh.layouts import row
        from bokeh.transform import jitter

        labels = [label for label, _ in self.shape.groups]
        f_curves = _figure(
            "Training return per grid point: IQM over seeds, 95% CI band",
            "env steps per seed",
            "training return (IQM)",
        )
        marks = []
        for p, ((label, n), color) in enumerate(
            zip(self.shape.groups, _palette(len(labels)), strict=True)
        ):
            style = {"source": self.source(f"curve-{p}", "band"), "color": color}
            style["legend_label"] = f"{label} (n={n})"
            f_curves.varea("env_step", "low", "high", alpha=0.15, **style)
            marks.append(f_curves.line("env_step", "iqm", width=2.2, name=label, **style))
        _hover(f_curves, marks, [("", "$name"), STEP, ("IQM", "@iqm{0.00}"), CI])
        _legend(f_curves)
        f_final = _figure(
            "Final greedy return per grid point: each seed, IQM and 95% CI",
            "grid point",
            "final greedy return",
            x_range=labels,
        )
        dots = f_final.scatter(
            jitter("point", width=0.25, range=f_final.x_range),
            "value",
            source=self.source("final-dots", "dots"),
            color="gray",
            alpha=0.6,
            size=7,
        )
        points = self.source("final-iqm", "points")
        f_final.segment("point", "low", "point", "high", source=points, color="black", width=2)
        iqm = f_final.scatter(
            "point", "iqm", source=points, marker="diamond", size=13, color="black"
        )
        _hover(f_final, [dots], [("point", "@point"), ("seed", "@seed"), ("return", "@value")])
        _hover(f_final, [iqm], [("point", "@point"), ("IQM", "@iqm{0.00}"), CI])
        f_final.xaxis.major_label_orientation = 0.5 if len(labels) > 4 else 0
        return row(f_curves, f_final, sizing_mode="stretch_width", name="sweep")

    def controls(self):
        """A checkbox per run that shows or hides it in every plot, with all / none."""
        from bokeh.layouts import row
        from bokeh.models import Button, CheckboxGroup, CustomJS

        n = len(self.shape.runs)
        box = CheckboxGroup(labels=list(self.shape.runs), active=list(range(n)), inline=True)
        box.js_on_change(
            "active",
            CustomJS(
                args={"runs": self.per_run},
                code="const on = new Set(cb_obj.active);\n"
                "runs.forEach((rs, i) => rs.forEach((r) => { r.visible = on.has(i); }));",
            ),
        )
        show, hide = Button(label="all", width=60), Button(label="none", width=60)
        show.js_on_event(
            "button_click",
            CustomJS(args={"box": box}, code=f"box.active = [...Array({n}).keys()];"),
        )
        hide.js_on_event("button_click", CustomJS(args={"box": box}, code="box.active = [];"))
        return row(show, hide, box, name="controls", sizing_mode="stretch_width")


TEMPLATE = """
{% block postamble %}{{ style }}{% endblock %}
{% block contents %}
@@DQNJAX_HEAD@@
<h2>Runs</h2>
@@DQNJAX_RUNS@@
{% if controls %}<p class="note">runs shown in every plot:</p>{{ embed(roots.controls) }}{% endif %}
<h2>Episodes</h2>
{{ embed(roots.episodes) }}
<h2>Greedy evaluations</h2>
@@DQNJAX_EVALS@@
{{ embed(roots.evals) }}
<h2>Learning: loss and mean Q</h2>
{{ embed(roots.learning) }}
{% if probes %}<h2>Q-values of the probe states</h2>{{ embed(roots.probes) }}{% endif %}
{% if sweep %}
<h2>Sweep: grid points compared</h2>
@@DQNJAX_SWEEP@@
{{ embed(roots.sweep) }}
{% endif %}
@@DQNJAX_SUMMARY@@
<h2>Config</h2>
@@DQNJAX_CONFIG@@
{% endblock %}
"""


SLOT = r'@@DQNJAX_([A-Z]+)@@|\["@@([a-z0-9-]+:[a-z_]+)@@"\]'
"""A text slot ``@@DQNJAX_NAME@@`` of the page, or a data source column's placeholder as bokeh
serializes it, ``["@@source:column@@"]``."""


@functools.lru_cache(maxsize=16)
def skeleton(shape: Shape) -> tuple[str, ...]:
    """The page of a :class:`Shape` without its numbers: bokeh's JavaScript inlined, the
    layout with a placeholder for each data column, split at the :data:`SLOT` matches into
    ``(text, slot, column, text, ...)`` (``slot`` or ``column`` is None) for :func:`render`."""
    from bokeh.core.property.validation import without_property_validation
    from bokeh.document import Document
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    @without_property_validation
    def build() -> Document:
        b = _Builder(shape)
        evals = b.evals()
        roots = [b.episodes(), evals, b.learning(evals.x_range)]
        if shape.probes:
            roots.append(b.probes(evals.x_range))
        if shape.sweep:
            roots.append(b.sweep())
        if len(shape.runs) > 1:
            roots.append(b.controls())
        doc = Document()
        for root in roots:
            doc.add_root(root)
        return doc

    page = file_html(
        build(),
        INLINE,
        title="@@DQNJAX_TITLE@@",
        template=TEMPLATE,
        template_variables={
            "style": STYLE,
            "controls": len(shape.runs) > 1,
            "probes": shape.probes > 0,
            "sweep": shape.sweep,
        },
    )
    return tuple(re.split(SLOT, page))


# --------------------------------------------------------------------------- page text


def _fmt(value, digits: int = 2) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:,.{digits}f}"


def _estimate(agg: dict) -> str:
    if not agg:
        return "-"
    low, high = agg["iqm_ci"]
    return f"{agg['iqm']:,.2f} [{low:,.2f}, {high:,.2f}]"


def table_html(files: RunFiles) -> str:
    """The runs table: per run its seed, episodes, mean return of the last :data:`WINDOW`
    episodes and latest (final, once finished) greedy return; per group the IQM [95% CI] of
    those over its runs."""
    rows = run_rows(files)
    eval_head = "final greedy return" if files.finished else "latest greedy return (env step)"
    head = ["run", "seed", "", "episodes", f"last-{WINDOW} mean return", eval_head]
    out = ['<table class="runs"><thead><tr>']
    out += [f"<th>{html.escape(h)}</th>" for h in head] + ["</tr></thead><tbody>"]
    colors = run_colors(shape_of(files))
    for r in rows:
        at = "" if files.finished or r["eval_step"] < 0 else f" <small>({r['eval_step']:,})</small>"
        swatch = f'<span class="swatch" style="background:{colors[r["run"]]}"></span>'
        out.append(
            f'<tr class="run" data-run="{r["run"]}"><td>{r["run"]}</td><td>{r["seed"]}</td>'
            f"<td>{swatch}{html.escape(r['label'])}</td>"
            f'<td class="episodes">{r["episodes"]}</td>'
            f'<td class="last-mean">{_fmt(r["last_mean"])}</td>'
            f'<td class="eval">{_fmt(r["eval"])}{at}</td></tr>'
        )
    for group, final, last in group_aggregates(files, rows):
        out.append(
            f'<tr class="group"><td colspan="3">IQM [95% CI] over {len(group.runs)} runs: '
            f"{html.escape(group.label)}</td><td></td><td>{_estimate(last)}</td>"
            f'<td class="group-eval">{_estimate(final)}</td></tr>'
        )
    out.append("</tbody></table>")
    return "".join(out)


def sweep_table_html(files: RunFiles) -> str:
    """A sweep's grid points: :func:`dqn_jax.stats.table_cells` of their final greedy returns
    (the numbers of ``sweep_table.txt``)."""
    from dqn_jax import stats
    from dqn_jax.sweep import SOLVED_AT

    finals = np.asarray(files.sweep.get("final_eval_return") or [], np.float64)
    if finals.ndim != 2:
        return ""
    threshold = SOLVED_AT.get(files.config["env"])
    head = ["grid point", "IQM [95% CI]", "mean [CI]", "median [CI]", "solved [CI]", "seeds"]
    out = ['<table class="sweep"><thead><tr>']
    out += [f"<th>{h}</th>" for h in head] + ["</tr></thead><tbody>"]
    for group, scores in zip(groups(files.num_runs, files.sweep), finals, strict=False):
        cells = stats.table_cells(stats.aggregate(scores, threshold=threshold))
        out.append(f"<tr><td>{html.escape(group.label)}</td>")
        out += [f"<td>{html.escape(c)}</td>" for c in cells] + ["</tr>"]
    out.append("</tbody></table>")
    if threshold is not None:
        out.append(f'<p class="note">solved: final greedy return &ge; {threshold:g}</p>')
    return "".join(out)


def _short(value):
    """``value`` with its floats at 6 significant digits (lists and dicts too)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, list):
        return [_short(v) for v in value]
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    return value


def dict_html(data: dict, css: str) -> str:
    """``data`` as a grid of names and values (JSON unless text, floats at 6 digits)."""
    items = []
    for key, value in data.items():
        text = value if isinstance(value, str) else json.dumps(_short(value))
        items.append(f"<div><dt>{html.escape(str(key))}</dt><dd>{html.escape(text)}</dd></div>")
    return f'<dl class="{css}">{"".join(items)}</dl>'


def head_html(files: RunFiles) -> str:
    """Title, status line (finished / in progress) and where and when the page was written
    (in progress: and when the last chunk was logged)."""
    c = files.config
    finished, line = status(files)
    written = time.strftime("%Y-%m-%d %H:%M:%S")
    badge = "finished" if finished else "stopped" if files.stopped else "progress"
    out = [
        f"<h1>{html.escape(c['env'])} &mdash; {html.escape(str(c['variant']))} "
        f"<small>({html.escape(str(c.get('backend', '')))} backend)</small></h1>",
        f'<p><span class="status {badge}" id="status">{html.escape(line)}</span></p>',
        f'<p class="meta">{html.escape(str(files.run_dir))} &middot; page written {written}',
    ]
    if finished or files.stopped:  # nothing more will come: no reload
        out.append("</p>")
        return "".join(out)
    metrics = files.run_dir / "metrics.jsonl"
    if metrics.exists():  # a run that stopped early shows it here: its last chunk is old
        logged = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(metrics.stat().st_mtime))
        out.append(f" &middot; last chunk logged {logged}")
    out.append(" &middot; reload to update</p>" + RELOAD)
    return "".join(out)


def slots(files: RunFiles) -> dict[str, str]:
    """The page's text for each ``@@NAME@@`` slot of :func:`skeleton`."""
    c = files.config
    evals = ""
    if not c["eval_episodes"]:
        evals = '<p class="note">no greedy evaluations (--eval-episodes 0)</p>'
    elif not files.eval_returns.size:
        evals = '<p class="note">no greedy evaluation yet: one at the end (and every '
        evals += "--eval-every-chunks chunks, if set)</p>"
    return {
        "TITLE": html.escape(f"{c['env']} - {c['variant']}: dqn-jax run report"),
        "HEAD": head_html(files),
        "RUNS": table_html(files),
        "EVALS": evals,
        "SWEEP": sweep_table_html(files) if files.sweep is not None else "",
        "SUMMARY": "<h2>Summary</h2>" + dict_html(files.summary, "summary")
        if files.summary is not None
        else "",
        "CONFIG": "<details><summary>every field of config.json</summary>"
        + dict_html(files.config, "config")
        + "</details>",
    }


def render(files: RunFiles) -> str:
    """The whole page as HTML text: the cached :func:`skeleton` of its shape with its text
    slots (:func:`slots`) and data columns (:func:`plot_data`) filled."""
    pieces = skeleton(shape_of(files))
    text, data = slots(files), plot_data(files)
    out = [pieces[0]]
    for i in range(1, len(pieces), 3):
        slot, column, after = pieces[i : i + 3]
        if slot is not None:
            out.append(text[slot])
        else:
            name, key = column.split(":")
            values = data.get(name, {}).get(key, [])
            # bokeh's JSON sits in the page HTML-escaped (only labels can hold & < >)
            out.append(html.escape(json.dumps(values, separators=(",", ":")), quote=False))
        out.append(after)
    return "".join(out)


STYLE = """
<style>
  html, body { height: auto; }
  body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
         padding: 12px 24px 40px; max-width: 1500px; color: #222; }
  h1 { font-size: 20pt; margin: 8px 0 4px; }
  h1 small { font-size: 11pt; color: #666; font-weight: normal; }
  h2 { font-size: 14pt; margin: 26px 0 6px; border-bottom: 1px solid #ddd; padding-bottom: 2px; }
  .status { display: inline-block; padding: 3px 10px; border-radius: 10px; font-weight: 600; }
  .status.finished { background: #dff3e3; color: #17602a; }
  .status.progress { background: #fff1cc; color: #7a5200; }
  .status.stopped { background: #fbe0e0; color: #8a1c1c; }
  .meta { color: #555; margin: 6px 0; }
  table { border-collapse: collapse; font-size: 10.5pt; margin: 6px 0; }
  th, td { padding: 3px 10px; text-align: right; border-bottom: 1px solid #eee; }
  th { background: #f6f6f6; }
  .runs td:nth-child(3), .runs th:nth-child(3), .sweep td:first-child { text-align: left; }
  tr.group td { font-weight: 600; background: #fafafa; }
  .swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px;
            border-radius: 2px; }
  dl { display: grid; grid-template-columns: repeat(auto-fill, minmax(290px, 1fr));
       gap: 0 18px; font-size: 10pt; margin: 6px 0; }
  dl div { display: flex; justify-content: space-between; border-bottom: 1px dotted #ddd; }
  dt { color: #555; margin-right: 8px; }
  dd { margin: 0; font-family: ui-monospace, monospace; text-align: right;
       overflow-wrap: anywhere; }
  .note { color: #666; font-size: 10pt; margin: 2px 0; }
  details summary { cursor: pointer; color: #333; }
</style>
"""

RELOAD = """
<label class="note"><input type="checkbox" id="autoreload"> reload every 30 s</label>
<script>
  (function () {
    const box = document.getElementById("autoreload");
    let saved = null;
    try { saved = window.localStorage.getItem("dqn-jax-autoreload"); } catch (e) {}
    box.checked = saved === "1";
    box.addEventListener("change", function () {
      try { window.localStorage.setItem("dqn-jax-autoreload", box.checked ? "1" : "0"); }
      catch (e) {}
    });
    setInterval(function () { if (box.checked) { window.location.reload(); } }, 30000);
  })();
</script>
"""


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename,
    so a reader sees the old page or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(run_dir: str | Path, seeds=None) -> Path:
    """(Re)write ``run_dir/report.html`` from the run directory's files; returns its path.
    :class:`RunDirError` if the directory, its config or its episodes are missing or
    damaged."""
    files = read_run(run_dir, seeds)
    path = Path(run_dir) / REPORT_FILE
    write_atomic(path, render(files))
    return path


# --------------------------------------------------------------------------- while training


def due(cost_s: float, since_s: float, budget: float = BUDGET) -> bool:
    """Whether a rewrite costing about ``cost_s`` fits in ``budget`` of the loop's time
    ``since_s`` since the last one ended (so all of them together take at most ``budget`` of
    the loop's time)."""
    return cost_s <= budget * since_s


class LiveReport:
    """Keeps ``out/report.html`` current during a run, within :data:`BUDGET` of the loop's
    time: :meth:`chunk` after each chunk (rewrites when :func:`due`), :meth:`flush` when the run
    stops early, :meth:`write` at the end. With ``config`` (the run's, as a dict), a thread
    builds the page's layout while the first chunks run, so the loop only ever pays for
    rewrites. A failure to write is reported once through ``echo`` and never stops training."""

    def __init__(
        self, out: Path, seeds, echo=print, budget: float = BUDGET, config: dict | None = None
    ):
        self.out, self.seeds, self.echo, self.budget = out, list(seeds), echo, budget
        self.last = time.perf_counter()  # when the last rewrite ended (or the loop started)
        self.cost = REWRITE_S  # the next rewrite's, estimated
        self.pending = False
        self.failed = False
        self.writes = 0
        self.ready = threading.Event()
        if config is None:
            self.ready.set()
        else:
            target = functools.partial(self._warm, shape(self.seeds, config["probe_states"], None))
            threading.Thread(target=target, name="report-layout", daemon=True).start()

    def _warm(self, live: Shape) -> None:
        with contextlib.suppress(Exception):  # a failure shows when the first write builds it
            skeleton(live)
            from dqn_jax import stats  # noqa: F401 - imports scipy.stats, which the tables use
        self.ready.set()

    def chunk(self) -> None:
        """A chunk's files were written: rewrite the page if its layout is built and the budget
        allows."""
        self.pending = True
        if self.ready.is_set() and due(self.cost, time.perf_counter() - self.last, self.budget):
            self.write()

    def flush(self) -> None:
        """Rewrite the page if chunks were reported since the last write."""
        if self.pending:
            self.write()

    def write(self) -> None:
        """Rewrite the page now."""
        self.ready.wait()
        if self.failed:
            return
        begin = time.perf_counter()
        try:
            files = read_run(self.out, self.seeds)
            built = time.perf_counter()
            skeleton(shape_of(files))  # built once per shape: not part of the next one's cost
            built = time.perf_counter() - built
            write_atomic(self.out / REPORT_FILE, render(files))
        except Exception as err:  # a report must never cost the run
            self.failed = True
            self.echo(f"warning: {self.out / REPORT_FILE} not written: {err}")
            return
        self.last = time.perf_counter()
        self.cost = self.last - begin - built
        self.pending = False
        self.writes += 1
