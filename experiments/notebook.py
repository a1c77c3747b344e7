"""The seed notebook's experiments, several seeds each, on CartPole-v0 dynamics (200-step limit).

    python experiments/notebook.py [--seeds 4] [--total-steps 150000] [--out runs/notebook]

Agents, with the notebook's hyperparameters (1 env, one update per env step, batch 64,
gamma 0.99, RMSProp 2.5e-4, one hidden layer of 64 ReLU with weights uniform in [-1, 1],
epsilon 1.0 -> 0.01 with exponential decay 0.001 per step, replay of 100,000):

- random: uniform actions, through the same loop;
- simple DQN: Q-learning bootstrapped from the online net, squared loss;
- DQN: target net copied every 1,000 steps, pseudo-Huber loss, replay prefilled with 10,000
  random-agent episodes;
- DDQN: as DQN with the Double Q-learning target;
- DDQN + PER: prioritized replay (new items get the priority of their own |td|, alpha 0.6,
  eps 0.01, stratified sampling), no prefill, as in the notebook; the notebook used no
  importance-sampling correction, so beta stays 0 here.

Each agent is composed here by passing its target and loss functions to ``make_train``.
One deliberate difference: the notebook stored the 200-step time limit of CartPole-v0 as a
terminal state; here a truncation bootstraps (see DESIGN.md).

The table: per agent, the episode at which the trailing 100-episode mean length first reached
195 (median over the seeds that did, and how many did), the best and the final 100-episode
mean (mean over seeds), and the wall time (compile + run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from common import header, table  # noqa: E402

from dqn_jax.cli import use_cpu_cores  # noqa: E402

# Before JAX starts: one XLA CPU device per core when the seeds divide evenly (as the CLI does).
_seeds = argparse.ArgumentParser(add_help=False)
_seeds.add_argument("--seeds", type=int, default=4)
use_cpu_cores(["--num-seeds", str(_seeds.parse_known_args()[0].seeds)])

from dqn_jax import losses, targets  # noqa: E402
from dqn_jax.config import from_preset  # noqa: E402
from dqn_jax.device_loop import make_train  # noqa: E402
from dqn_jax.run import train  # noqa: E402

SOLVED = 195.0


def agents(total_steps: int, seeds: int):
    """(name, config, target_fn, loss_fn) for each of the notebook's agents."""
    base = from_preset("notebook", total_steps=total_steps, num_seeds=seeds, eval_episodes=10)
    return [
        ("random", base.replace(variant="random"), None, None),
        (
            "simple DQN",
            base.replace(variant="dqn_simple"),
            targets.q_learning_online,
            losses.squared,
        ),
        (
            "DQN (+10k random episodes)",
            base.replace(variant="dqn", prefill_episodes=10_000),
            targets.q_learning,
            losses.pseudo_huber,
        ),
        (
            "DDQN (+10k random episodes)",
            base.replace(variant="ddqn", prefill_episodes=10_000),
            targets.double_q_learning,
            losses.pseudo_huber,
        ),
        (
            "DDQN + PER",
            base.replace(
                variant="ddqn_per", per_priority_on_insert="td", per_beta0=0.0, per_beta_final=0.0
            ),
            targets.double_q_learning,
            losses.pseudo_huber,
        ),
    ]


def trailing_means(lengths: np.ndarray, window: int = 100) -> np.ndarray:
    """Mean of each full trailing window of ``window`` episodes (empty if fewer episodes)."""
    if len(lengths) < window:
        return np.zeros(0)
    c = np.cumsum(np.insert(lengths.astype(float), 0, 0.0))
    return (c[window:] - c[:-window]) / window


def summarize(name: str, episodes: list[np.ndarray], seconds: float) -> dict:
    firsts, bests, finals = [], [], []
    for eps in episodes:
        means = trailing_means(eps[:, 1])
        hit = np.nonzero(means >= SOLVED)[0]
        if len(hit):
            firsts.append(int(hit[0]) + 100)  # episode number at the end of that window
        bests.append(means.max() if len(means) else np.nan)
        finals.append(means[-1] if len(means) else np.nan)
    solved = (
        f"{int(np.median(firsts))} ({len(firsts)}/{len(episodes)} seeds)"
        if firsts
        else (f"never (0/{len(episodes)} seeds)")
    )
    return {
        "agent": name,
        "episode mean>=195 (median)": solved,
        "best 100-ep mean": f"{np.nanmean(bests):.1f}",
        "final 100-ep mean": f"{np.nanmean(finals):.1f}",
        "final per seed": " ".join(f"{x:.0f}" for x in finals),
        "episodes/seed": f"{np.mean([len(e) for e in episodes]):.0f}",
        "wall s": f"{seconds:.1f}",
    }


def main() -> None:
    p = argparse.ArgumentParser(description="The seed notebook's experiments, several seeds each.")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--total-steps", type=int, default=150_000, help="env steps per seed")
    p.add_argument("--out", type=Path, default=Path("runs/notebook"))
    p.add_argument("--only", nargs="*", default=None, help="run only agents whose name has this")
    args = p.parse_args()
    print(header("The notebook's agents on CartPole-v0"))
    rows = []
    for name, config, target_fn, loss_fn in agents(args.total_steps, args.seeds):
        if args.only and not any(o.lower() in name.lower() for o in args.only):
            continue
        trainer = make_train(config, target_fn=target_fn, loss_fn=loss_fn)
        start = time.perf_counter()
        slug = name.split(" (")[0].lower().replace(" ", "_").replace("+", "plus")
        result = train(
            config, args.out / slug, trainer=trainer, progress=False, echo=lambda s: None
        )
        rows.append(summarize(name, result.episodes, time.perf_counter() - start))
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print(f"\n{args.seeds} seeds x {args.total_steps:,} env steps per agent; runs in {args.out}")
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
