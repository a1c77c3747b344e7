"""Time to solve CartPole-v1: env steps and wall seconds until the IQM over seeds of the greedy
evaluation first reaches 475, for each variant's own defaults on the same seeds.

    python experiments/time_to_solve.py [--variants pqn ddqn] [--seeds 8] [--seed 0]
                                        [--chunks 20] [--out runs/time_to_solve]

Each variant is ``from_preset("default", variant=V, num_seeds=S, eval_every_chunks=1,
num_chunks=C)`` on the JAX backend (what ``dqn-jax train --env CartPole-v1 --variant V
--num-seeds S`` runs, evaluated greedily after every chunk: 10 episodes per seed). ``steps``
is the first evaluation's env step (per seed) at which the IQM of the seeds' mean greedy
returns is >= 475; ``train s`` the seconds of the chunks up to it (training and the periodic
evaluations; not the compile), ``+ compile s`` with the run's compile time added. A variant
that never gets there says so.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from common import header, table  # noqa: E402

SOLVED = 475.0


def first_solved(run_dir: Path, seeds: int):
    """(env step, training seconds up to it) of the first evaluation whose IQM >= SOLVED."""
    from dqn_jax import stats

    by_step: dict[int, list[float]] = {}
    with open(run_dir / "evals.csv") as f:
        for row in csv.DictReader(f):
            by_step.setdefault(int(row["env_step"]), []).append(float(row["mean_return"]))
    chunks = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seconds = {c["env_step"]: c["seconds"] for c in chunks if "seconds" in c}
    elapsed = 0.0
    for step in sorted(seconds):
        elapsed += seconds[step]
        scores = by_step.get(step)
        if scores and len(scores) == seeds and stats.iqm(scores) >= SOLVED:
            return step, elapsed
    return None, elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=["pqn", "ddqn"])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("runs/time_to_solve"))
    args = p.parse_args()

    from dqn_jax import run
    from dqn_jax.config import from_preset

    print(header(f"CartPole-v1: time to a greedy IQM of {SOLVED:g} over {args.seeds} seeds"))
    rows = []
    for variant in args.variants:
        config = from_preset(
            "default",
            variant=variant,
            num_seeds=args.seeds,
            seed=args.seed,
            eval_every_chunks=1,
            num_chunks=args.chunks,
        )
        out = args.out / variant
        result = run.train(config, out, progress=False, echo=lambda s: None, force=True)
        summary = json.loads((out / "summary.json").read_text())
        step, train_s = first_solved(out, args.seeds)
        finals = result.eval_returns.mean(axis=1)
        rows.append(
            {
                "variant": variant,
                "steps": f"{step:,}" if step else f"not within {config.total_steps:,}",
                "train s": f"{train_s:.1f}" if step else "-",
                "+ compile s": f"{train_s + summary['compile_s']:.1f}" if step else "-",
                "final >= 475": f"{int((finals >= SOLVED).sum())}/{args.seeds}",
                "run s": f"{summary['run_s']:.1f}",
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print("\n" + table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
