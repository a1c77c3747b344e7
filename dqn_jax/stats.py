"""Aggregate statistics over seeds, in the style of Agarwal et al. (2021).

"Deep Reinforcement Learning at the Edge of the Statistical Precipice" recommends reporting the
interquartile mean (IQM) of run scores with stratified-bootstrap confidence intervals, plus the
probability of improvement between two algorithms. This module computes those on NumPy arrays
of *final scores*:

- ``scores`` has shape ``[num_seeds]`` (one task) or ``[num_seeds, num_tasks]``; a 1-D array is
  treated as ``[num_seeds, 1]``. Units are whatever the scores are in (e.g. episode return).
- Every confidence interval is a percentile interval from a **stratified** bootstrap: seeds are
  resampled with replacement independently within each task (and, for the probability of
  improvement, independently for each algorithm). With one task that is the ordinary percentile
  bootstrap over seeds.

Bootstrap engine: :func:`scipy.stats.bootstrap`. Passing each task's column as a separate,
unpaired sample (``paired=False``) makes SciPy resample each column independently, which is
exactly the stratified bootstrap. The ``rliable`` package was not used: its latest release
(1.2.0) pulls in ``arch``, ``statsmodels``, ``pandas``, ``seaborn`` and ``matplotlib`` (about
485 MB installed), and with NumPy 2.4 / pandas 3.1 ``from rliable import library`` fails at
import time inside ``arch`` 7.2.0 (``TypeError: deprecate_kwarg() missing 1 required positional
argument``).

Definitions (``N = num_seeds * num_tasks`` run-task scores):

- mean: mean of all run-task scores (equal to the mean of per-task means).
- median: median of all run-task scores. Note that rliable's aggregate median is instead the
  median over tasks of per-task means; the two coincide only in special cases. Ours reduces to
  the median over seeds for a single task.
- IQM: mean of the middle 50% of all run-task scores, i.e. ``scipy.stats.trim_mean(x, 0.25)``
  over the flattened scores (``floor(N / 4)`` scores are dropped from each end).

Degenerate inputs: a sample that cannot vary under resampling (one seed, or all seeds equal)
is held fixed rather than bootstrapped; if nothing can vary, the interval is ``(x, x)`` exactly.
With a single seed that zero-width interval says nothing about uncertainty: :func:`aggregate`
reports it through ``ci_valid=False``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.stats

Interval = tuple[float, float]

# Upper bound on scores materialised per vectorised bootstrap batch (about 32 MB of float64).
_MAX_BATCH_ELEMENTS = 4_000_000


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _format_indices(mask: np.ndarray, limit: int = 5) -> str:
    """Indices where ``mask`` is true, as text (at most ``limit`` shown)."""
    where = np.argwhere(mask)
    shown = [
        str(int(idx[0])) if mask.ndim == 1 else str(tuple(int(i) for i in idx))
        for idx in where[:limit]
    ]
    more = f" (and {len(where) - limit} more)" if len(where) > limit else ""
    return ", ".join(shown) + more


def as_score_matrix(scores: Any, name: str = "scores") -> np.ndarray:
    """Validate scores and return them as a float64 array of shape ``[num_seeds, num_tasks]``.

    Accepts array-likes of shape ``[num_seeds]`` (one task) or ``[num_seeds, num_tasks]``.
    Raises ``ValueError`` for other ranks, empty input, and NaN or infinite scores (the message
    gives how many and at which indices of the input).
    """
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise ValueError(
            f"{name} must have shape [num_seeds] or [num_seeds, num_tasks], got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); need at least one seed and task")
    nan = np.isnan(arr)
    if nan.any():
        raise ValueError(
            f"{name} contains {int(nan.sum())} NaN value(s), at index {_format_indices(nan)}"
        )
    inf = np.isinf(arr)
    if inf.any():
        raise ValueError(
            f"{name} contains {int(inf.sum())} infinite value(s), at index {_format_indices(inf)}"
        )
    return arr.reshape(arr.shape[0], 1) if arr.ndim == 1 else arr


def _check_bootstrap_args(confidence: float, n_resamples: int) -> None:
    """Raise ``ValueError`` unless ``0 < confidence < 1`` and ``n_resamples >= 1``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")


# --------------------------------------------------------------------------------------------
# Point statistics, vectorised over leading (bootstrap) axes
# --------------------------------------------------------------------------------------------


def _flatten_tasks(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Join per-task columns ``[..., num_seeds]`` into run-task scores ``[..., num_seeds * T]``."""
    return np.concatenate(columns, axis=-1)


def _iqm_last_axis(x: np.ndarray) -> np.ndarray:
    """Interquartile mean along the last axis: ``[..., n] -> [...]``."""
    return np.asarray(scipy.stats.trim_mean(x, 0.25, axis=-1))


def _summary_stats(*columns: np.ndarray) -> np.ndarray:
    """Mean, median and IQM of run-task scores: T columns ``[..., n]`` -> ``[3, ...]``."""
    flat = _flatten_tasks(columns)
    return np.stack([flat.mean(axis=-1), np.median(flat, axis=-1), _iqm_last_axis(flat)])


def _solved_stat(threshold: float) -> Callable[..., np.ndarray]:
    """Statistic: fraction of run-task scores ``>= threshold``; T columns -> ``[1, ...]``."""

    def statistic(*columns: np.ndarray) -> np.ndarray:
        flat = _flatten_tasks(columns)
        return (flat >= threshold).mean(axis=-1)[None]

    return statistic


def _poi_one_task(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y) / 2 from samples ``x [..., n]``, ``y [..., m]`` -> ``[...]``.

    Uses the Mann-Whitney U statistic of ``x`` (midranks, so ties count 1/2) divided by ``n*m``.
    """
    n, m = x.shape[-1], y.shape[-1]
    ranks = scipy.stats.rankdata(np.concatenate([x, y], axis=-1), axis=-1)
    u_x = ranks[..., :n].sum(axis=-1) - n * (n + 1) / 2.0
    return u_x / (n * m)


def _poi_stat(*columns: np.ndarray) -> np.ndarray:
    """Average over tasks of P(X > Y): T x-columns then T y-columns -> ``[1, ...]``."""
    num_tasks = len(columns) // 2
    per_task = [_poi_one_task(columns[t], columns[num_tasks + t]) for t in range(num_tasks)]
    return np.mean(per_task, axis=0)[None]


# --------------------------------------------------------------------------------------------
# Stratified bootstrap
# --------------------------------------------------------------------------------------------


def _can_vary(sample: np.ndarray) -> bool:
    """Whether resampling ``sample [n]`` with replacement can change it (>= 2 distinct values)."""
    return sample.size >= 2 and bool(np.any(sample != sample[0]))


def stratified_bootstrap_ci(
    samples: Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Point estimate and percentile CI of ``statistic`` under a stratified bootstrap.

    ``samples`` are 1-D arrays (strata, e.g. one per task and algorithm), each resampled with
    replacement independently of the others. ``statistic(*samples)`` must accept samples of
    shape ``[..., n_k]`` and return shape ``[k, ...]`` (``k`` outputs). Returns
    ``(estimate [k], interval [k, 2])``; column 0 is the low end, column 1 the high end.

    Samples that cannot vary (one element, or all equal) are held fixed, which is exactly what
    resampling would do; if none can vary the interval is ``(estimate, estimate)``.
    The result is deterministic for a fixed ``seed`` (a ``numpy.random.default_rng`` seed).
    """
    _check_bootstrap_args(confidence, n_resamples)
    samples = [np.asarray(s, dtype=np.float64) for s in samples]
    estimate = np.asarray(statistic(*samples), dtype=np.float64)
    moving = [i for i, s in enumerate(samples) if _can_vary(s)]
    if not moving:
        return estimate, np.stack([estimate, estimate], axis=-1)

    def resampled_statistic(*moved: np.ndarray, axis: int = -1) -> np.ndarray:
        batch_shape = moved[0].shape[:-1]
        full = [np.broadcast_to(s, batch_shape + s.shape) for s in samples]
        for i, s in zip(moving, moved, strict=True):
            full[i] = s
        return statistic(*full)

    total = sum(s.size for s in samples)
    result = scipy.stats.bootstrap(
        tuple(samples[i] for i in moving),
        resampled_statistic,
        n_resamples=int(n_resamples),
        batch=max(1, min(int(n_resamples), _MAX_BATCH_ELEMENTS // total)),
        vectorized=True,
        paired=False,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low = np.asarray(result.confidence_interval.low, dtype=np.float64).reshape(estimate.shape)
    high = np.asarray(result.confidence_interval.high, dtype=np.float64).reshape(estimate.shape)
    return estimate, np.stack([low, high], axis=-1)


def _columns(matrix: np.ndarray) -> list[np.ndarray]:
    """Split ``[num_seeds, num_tasks]`` into ``num_tasks`` contiguous ``[num_seeds]`` columns."""
    return [np.ascontiguousarray(matrix[:, t]) for t in range(matrix.shape[1])]


def _interval(row: np.ndarray) -> Interval:
    """``[2]`` array -> ``(low, high)`` tuple of Python floats."""
    return float(row[0]), float(row[1])


# --------------------------------------------------------------------------------------------
# Public metrics
# --------------------------------------------------------------------------------------------


def iqm(scores: Any) -> float:
    """Interquartile mean of all run-task scores (``[num_seeds]`` or ``[num_seeds, num_tasks]``).

    Mean of the middle 50% of the ``N`` flattened scores after dropping ``floor(N / 4)`` from
    each end; same units as ``scores``. For one task it equals
    ``scipy.stats.trim_mean(scores, 0.25)``.
    """
    return float(_iqm_last_axis(as_score_matrix(scores).ravel()))


def fraction_solved(scores: Any, threshold: float) -> float:
    """Fraction in ``[0, 1]`` of run-task scores ``>= threshold`` (same units as ``scores``)."""
    return float((as_score_matrix(scores) >= threshold).mean())


def fraction_solved_ci(
    scores: Any,
    threshold: float,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, Interval]:
    """:func:`fraction_solved` with a stratified-bootstrap percentile CI.

    ``scores`` is ``[num_seeds]`` or ``[num_seeds, num_tasks]``. Returns
    ``(fraction, (low, high))``, all in ``[0, 1]``; deterministic for a fixed ``seed``.
    """
    matrix = as_score_matrix(scores)
    estimate, ci = stratified_bootstrap_ci(
        _columns(matrix),
        _solved_stat(float(threshold)),
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
    )
    return float(estimate[0]), _interval(ci[0])


def aggregate(
    scores: Any,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Mean, median and IQM of final scores, each with a stratified-bootstrap percentile CI.

    ``scores`` is ``[num_seeds]`` or ``[num_seeds, num_tasks]``. Returns a dict with

    - ``mean``, ``median``, ``iqm``: floats, in the units of ``scores``;
    - ``mean_ci``, ``median_ci``, ``iqm_ci``: ``(low, high)`` at level ``confidence``;
    - ``n_seeds``, ``n_tasks``: ints; ``confidence``: float;
    - ``ci_valid``: ``False`` when ``n_seeds == 1`` (the intervals are then ``(x, x)`` and carry
      no information about uncertainty);
    - if ``threshold`` is given, ``solved`` and ``solved_ci`` from :func:`fraction_solved_ci`.

    All three intervals come from the same resamples; deterministic for a fixed ``seed``.
    All-equal scores give ``(x, x)`` intervals without warnings.
    """
    matrix = as_score_matrix(scores)
    columns = _columns(matrix)
    estimate, ci = stratified_bootstrap_ci(
        columns, _summary_stats, confidence=confidence, n_resamples=n_resamples, seed=seed
    )
    out: dict[str, Any] = {}
    for k, key in enumerate(("mean", "median", "iqm")):
        out[key] = float(estimate[k])
        out[f"{key}_ci"] = _interval(ci[k])
    out["n_seeds"], out["n_tasks"] = int(matrix.shape[0]), int(matrix.shape[1])
    out["confidence"] = float(confidence)
    out["ci_valid"] = matrix.shape[0] >= 2
    if threshold is not None:
        out["solved"], out["solved_ci"] = fraction_solved_ci(
            matrix, threshold, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
    return out


def probability_of_improvement(
    scores_x: Any,
    scores_y: Any,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, Interval]:
    """P(X > Y) of algorithm X over Y, averaged over tasks, with a stratified-bootstrap CI.

    ``scores_x`` is ``[n, num_tasks]`` (or ``[n]``), ``scores_y`` is ``[m, num_tasks]`` (or
    ``[m]``); seed counts may differ, task counts must match. Per task the estimate is the
    Mann-Whitney U statistic divided by ``n * m``: the fraction of ``(x_i, y_j)`` pairs with
    ``x_i > y_j``, ties counting 1/2. The bootstrap resamples X's and Y's seeds independently
    within each task. Returns ``(p, (low, high))`` in ``[0, 1]``; deterministic for a fixed
    ``seed``.
    """
    x = as_score_matrix(scores_x, "scores_x")
    y = as_score_matrix(scores_y, "scores_y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"scores_x has {x.shape[1]} task(s) but scores_y has {y.shape[1]}; "
            "task counts must match"
        )
    estimate, ci = stratified_bootstrap_ci(
        _columns(x) + _columns(y),
        _poi_stat,
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
    )
    return float(estimate[0]), _interval(ci[0])


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

_TABLE_KEYS = ("iqm", "iqm_ci", "mean", "mean_ci", "median", "median_ci", "n_seeds")


def _format_estimate(value: float, ci: Interval, precision: int) -> str:
    """``value [low, high]`` with ``precision`` decimals."""
    return f"{value:.{precision}f} [{ci[0]:.{precision}f}, {ci[1]:.{precision}f}]"


def table_cells(stats: Mapping[str, Any], precision: int = 2) -> list[str]:
    """The cells after the name in :func:`format_table` for one :func:`aggregate` result: IQM,
    mean, median (each ``x [low, high]``), solved fraction (``-`` without a threshold), seeds."""
    solved = _format_estimate(stats["solved"], stats["solved_ci"], 2) if "solved" in stats else "-"
    n_seeds = str(stats["n_seeds"]) + ("" if stats.get("ci_valid", True) else "*")
    return [
        _format_estimate(stats["iqm"], stats["iqm_ci"], precision),
        _format_estimate(stats["mean"], stats["mean_ci"], precision),
        _format_estimate(stats["median"], stats["median_ci"], precision),
        solved,
        n_seeds,
    ]


def format_table(rows: Mapping[str, Mapping[str, Any]], *, precision: int = 2) -> str:
    """Fixed-width text table, one line per variant, from :func:`aggregate` results.

    ``rows`` maps a variant name to its :func:`aggregate` dict (insertion order is kept).
    Columns: variant, IQM [low, high], mean [low, high], median [low, high], solved fraction
    [low, high] (``-`` when ``aggregate`` had no ``threshold``), number of seeds (``*`` marks a
    single seed, whose interval is meaningless). ``precision`` is the number of decimals for
    scores. Returns the table as one string without a trailing newline.
    """
    if not rows:
        raise ValueError("format_table needs at least one row")
    for name, stats in rows.items():
        missing = [k for k in _TABLE_KEYS if k not in stats]
        if missing:
            raise ValueError(f"row {name!r} lacks key(s) {missing}; pass aggregate() results")
    level = next(iter(rows.values())).get("confidence", 0.95)
    header = [
        "variant",
        f"IQM [{level:.0%} CI]",
        "mean [CI]",
        "median [CI]",
        "solved [CI]",
        "seeds",
    ]
    body = [[str(name), *table_cells(stats, precision)] for name, stats in rows.items()]
    widths = [max(len(line[c]) for line in [header, *body]) for c in range(len(header))]

    def render(line: list[str]) -> str:
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        return "  ".join(cells).rstrip()

    lines = [render(header), "  ".join("-" * w for w in widths), *map(render, body)]
    if any(not stats.get("ci_valid", True) for stats in rows.values()):
        lines.append("* one seed: its interval is zero-width and says nothing about uncertainty")
    return "\n".join(lines)
