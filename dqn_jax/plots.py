"""Matplotlib figures of a run (PNG): the notebook's steps and rewards per episode."""

from __future__ import annotations

from pathlib import Path

import numpy as np


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
