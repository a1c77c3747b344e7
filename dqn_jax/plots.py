"""Matplotlib figures of a run (PNG): the notebook's steps and rewards per episode."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from dqn_jax.config import RunDirError, load_run_config


def rolling(values: np.ndarray, window: int, fn) -> np.ndarray:
    """``fn`` over the trailing ``window`` values at each index (shorter at the start)."""
    return np.array([fn(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))])


def plot_episodes(per_seed: list[np.ndarray], path: Path, title: str, window: int = 100) -> None:
    """Two panels, as in the notebook: steps per episode (seed 0's raw lengths with the trailing
    ``window`` mean/min/max, plus every seed's trailing mean) and return per episode.

    ``per_seed``: one ``[n, 3]`` array (env_step, length, return) per seed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_len, ax_ret) = plt.subplots(1, 2, figsize=(12, 4.2))
    for seed, eps in enumerate(per_seed):
        if len(eps) == 0:
            continue
        x = np.arange(1, len(eps) + 1)
        lengths, returns = eps[:, 1], eps[:, 2]
        if seed == 0:
            ax_len.plot(x, lengths, color="gold", lw=0.6, label="seed 0: length")
            ax_len.plot(
                x,
                rolling(lengths, window, np.min),
                color="orange",
                lw=1,
                label=f"seed 0: {window}-ep min",
            )
            ax_len.plot(
                x,
                rolling(lengths, window, np.max),
                color="red",
                lw=1,
                label=f"seed 0: {window}-ep max",
            )
            ax_ret.plot(x, returns, color="tab:blue", lw=0.6, label="seed 0: return")
        mean_label = f"{window}-episode mean, each seed" if seed == 0 else None
        ax_len.plot(
            x, rolling(lengths, window, np.mean), color="green", lw=1, alpha=0.7, label=mean_label
        )
        ax_ret.plot(
            x, rolling(returns, window, np.mean), color="navy", lw=1, alpha=0.7, label=mean_label
        )
    ax_len.set(
        title=f"Steps per episode ({len(per_seed)} seeds)", xlabel="episode", ylabel="steps (T)"
    )
    ax_ret.set(title="Return per episode", xlabel="episode", ylabel="return (R)")
    for ax in (ax_len, ax_ret):
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def binned_returns(episodes: np.ndarray, total_steps: int, num_bins: int = 50) -> np.ndarray:
    """Mean return of the episodes that ended in each of ``num_bins`` equal env-step bins
    (``f32[num_bins]``); a bin with no finished episode repeats the previous bin's value (NaN
    before the first episode). ``episodes``: ``[n, 3]`` (env_step, length, return)."""
    edges = np.linspace(0, total_steps, num_bins + 1)
    which = np.clip(np.searchsorted(edges, episodes[:, 0], side="left") - 1, 0, num_bins - 1)
    sums = np.bincount(which, weights=episodes[:, 2], minlength=num_bins)
    counts = np.bincount(which, minlength=num_bins)
    out = np.full(num_bins, np.nan)
    last = np.nan
    for i in range(num_bins):
        last = sums[i] / counts[i] if counts[i] else last
        out[i] = last
    return out


def iqm_band(runs: np.ndarray, n_resamples: int = 500) -> tuple[np.ndarray, ...]:
    """``(iqm, low, high)``, each ``f64[points]``: per column of ``runs`` (``[seeds, points]``)
    the IQM of its finite values and its 95% stratified-bootstrap CI (:func:`dqn_jax.stats.
    aggregate`); NaN where a column has no finite value."""
    from dqn_jax import stats

    band = np.full((3, runs.shape[1]), np.nan)
    for i, column in enumerate(np.asarray(runs, np.float64).T):
        column = column[np.isfinite(column)]
        if len(column):
            agg = stats.aggregate(column, n_resamples=n_resamples)
            band[:, i] = agg["iqm"], *agg["iqm_ci"]
    return band[0], band[1], band[2]


def plot_learning_curves(
    curves: dict[str, np.ndarray], x: np.ndarray, path: Path, title: str, ylabel: str = "return"
) -> None:
    """One line per label: the IQM over seeds of ``curves[label]`` (``[seeds, bins]``) at each
    ``x`` (env steps), with its 95% stratified-bootstrap confidence band (dqn_jax.stats)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    for label, runs in curves.items():
        iqm, low, high = iqm_band(runs)
        (line,) = ax.plot(x, iqm, lw=1.8, label=f"{label} (n={runs.shape[0]})")
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.25, lw=0)
    ax.set(title=title, xlabel="env steps per seed", ylabel=f"{ylabel} (IQM, 95% CI band)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_rows(path: Path, width: int) -> np.ndarray:
    """``f64[n, width]``: the rows of a run's CSV file after its header line (``n = 0`` for a
    header alone, as in a run that has not finished an episode yet); :class:`RunDirError` when
    the file is missing or damaged."""
    try:
        with warnings.catch_warnings():  # a header alone is a valid file, not worth a warning
            warnings.filterwarnings("ignore", "loadtxt: input contained no data")
            rows = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        return rows.reshape(-1, width)
    except FileNotFoundError:
        raise RunDirError(f"{path} not found") from None
    except (OSError, ValueError) as err:
        raise RunDirError(f"{path} is damaged: {err}") from None


def read_episodes(run_dir: Path, num_runs: int) -> list[np.ndarray]:
    """Per run, ``[n, 3]`` (env_step, length, return) from ``run_dir/episodes.csv``."""
    path = Path(run_dir) / "episodes.csv"
    if not path.exists():
        raise RunDirError(f"{path} not found: {run_dir} holds no episodes")
    rows = read_rows(path, 5)
    return [rows[rows[:, 0] == run][:, 2:5] for run in range(num_runs)]


def point_label(point: dict[str, float]) -> str:
    """``"lr=0.001, gamma=0.99"``: a sweep grid point as text."""
    return ", ".join(f"{k}={v:g}" for k, v in point.items())


def read_sweep(run_dir: str | Path) -> dict | None:
    """``run_dir/sweep.json`` (None for a plain run); :class:`RunDirError` if damaged."""
    import json

    path = Path(run_dir) / "sweep.json"
    if not path.exists():
        return None
    try:
        sweep = json.loads(path.read_text())
        if not isinstance(sweep.get("seeds"), list) or not isinstance(sweep.get("points"), list):
            raise ValueError("expected lists 'seeds' and 'points'")
    except (OSError, ValueError, AttributeError) as err:
        raise RunDirError(f"{path} is damaged: {err}") from None
    return sweep


def sweep_curves(
    sweep: dict, episodes: list[np.ndarray], total_steps: int, num_bins: int = 50
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``(curves, x)``: per grid point label, the :func:`binned_returns` of its runs
    (``[seeds, num_bins]``), and the bins' right edges ``x`` (env steps per seed)."""
    seeds = len(sweep["seeds"])
    curves = {}
    for p, point in enumerate(sweep["points"]):
        runs = episodes[p * seeds : (p + 1) * seeds]
        curves[point_label(point)] = np.stack(
            [binned_returns(e, total_steps, num_bins) for e in runs]
        )
    return curves, np.linspace(0, total_steps, num_bins + 1)[1:]


def replot(run_dir: str | Path) -> list[Path]:
    """Redraw a run directory's figures from its CSV/JSON files, without rerunning anything:
    ``episodes.png`` always, ``q_probes.png`` if Q-values were traced, ``curves.png`` (IQM
    learning curves per grid point) for a sweep.
    Returns the paths written."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir).to_dict()
    episodes = read_episodes(run_dir, config["num_seeds"])
    paths = [run_dir / "episodes.png"]
    plot_episodes(episodes, paths[0], f"{config['env']} - {config['variant']}")
    if (run_dir / "q_probes.csv").exists():
        paths.append(run_dir / "q_probes.png")
        try:
            plot_q_probes(run_dir / "q_probes.csv", paths[-1], f"{config['env']}: Q-values")
        except ValueError as err:
            raise RunDirError(f"{run_dir / 'q_probes.csv'} is damaged: {err}") from None
    sweep = read_sweep(run_dir)
    if sweep is not None:
        curves, x = sweep_curves(sweep, episodes, config["total_steps"])
        paths.append(run_dir / "curves.png")
        title = f"{config['env']} - {config['variant']}: sweep"
        plot_learning_curves(curves, x, paths[-1], title, "training return")
    return paths


def plot_q_probes(csv_path: Path, path: Path, title: str) -> None:
    """The notebook's "Q samples": ``max_a Q(s, a)`` of each probe state over training, one line
    per probe for seed 0 (thin lines: the other seeds), from ``q_probes.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_rows(csv_path, 5)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (seed, probe), (steps, best) in q_probe_traces(rows).items():
        ax.plot(
            steps,
            best,
            color=colors[probe % len(colors)],
            lw=1.6 if seed == 0 else 0.4,
            alpha=1.0 if seed == 0 else 0.35,
            label=f"state {probe + 1}" if seed == 0 else None,
        )
    ax.set(title=title, xlabel="env steps per seed", ylabel="max_a Q(s, a)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8, title="seed 0 (thin: other seeds)", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def q_probe_traces(rows: np.ndarray) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """Per (run, probe state), ``(env_steps, max_a Q)`` over training, both ``f64[points]``, from
    the rows of ``q_probes.csv`` (``[n, 5]``: seed, env_step, probe, action, q)."""
    traces = {}
    for seed in np.unique(rows[:, 0]).astype(int):
        for probe in np.unique(rows[:, 2]).astype(int):
            sel = rows[(rows[:, 0] == seed) & (rows[:, 2] == probe)]
            steps = np.unique(sel[:, 1])
            traces[seed, probe] = steps, np.array([sel[sel[:, 1] == s][:, 4].max() for s in steps])
    return traces
