"""Several seeds on the Gymnasium backend in one process (``--num-seeds S``: one vector env
of ``S * num_envs`` environments, the learners vmapped in each program) against the same seeds
as single-seed processes run one after another.

    python benchmarks/gymnasium_seeds.py [--env CartPole-v1] [--total-steps N]
                                         [--seeds 1 4 8] [--no-sequential]

Every row is a whole ``dqn-jax train --backend gymnasium`` process (start-up, compile,
training, evaluation, files), timed from outside. Rows: one per ``S`` in ``--seeds`` (steps/s
counts all seeds' env steps), then the largest ``S``'s seeds ``0 .. S-1`` as ``S`` single-seed
processes in sequence (their wall times summed). Final greedy returns are per seed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import header, table  # noqa: E402


def train(args, out: Path, *flags: str) -> tuple[float, dict]:
    """Wall seconds of one whole ``dqn-jax train`` process, and its summary."""
    argv = [sys.executable, "-m", "dqn_jax.cli", "train", "--env", args.env]
    argv += ["--backend", "gymnasium", "--no-progress", "--out", str(out), *flags]
    if args.total_steps:
        argv += ["--total-steps", str(args.total_steps)]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start, json.loads((out / "summary.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--total-steps", type=int, default=None, help="per seed (default: preset's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--no-sequential", action="store_true", help="skip the single-seed runs")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in args.seeds:
            wall, summary = train(args, Path(tmp) / f"s{s}", "--num-seeds", str(s))
            rows.append(row(f"--num-seeds {s} (1 process)", s, wall, summary))
        if not args.no_sequential:
            s = max(args.seeds)
            walls, returns, steps, compile_s = [], [], 0, 0.0
            for seed in range(s):
                wall, summary = train(args, Path(tmp) / f"one{seed}", "--seed", str(seed))
                walls.append(wall)
                returns += summary["final_eval_return_per_seed"]
                steps += summary["total_env_steps"]
                compile_s += summary["compile_s"]
            summary = {"total_env_steps": steps, "final_eval_return_per_seed": returns}
            rows.append(row(f"{s} single-seed processes in sequence", s, sum(walls), summary))
            rows[-1]["compile s"] = f"{compile_s:.1f}"
    print(header("Gymnasium backend: several seeds in one process vs one process per seed"))
    columns = ["run", "seeds", "wall s", "compile s", "env steps/s (all seeds)", "solved", "final"]
    print(table(rows, columns))


def row(name: str, seeds: int, wall: float, summary: dict) -> dict:
    returns = summary["final_eval_return_per_seed"]
    return {
        "run": name,
        "seeds": seeds,
        "wall s": f"{wall:.1f}",
        "compile s": f"{summary.get('compile_s', 0):.1f}",
        "env steps/s (all seeds)": f"{summary['total_env_steps'] / wall:,.0f}",
        "solved": f"{sum(r >= 475 for r in returns)}/{len(returns)}",
        "final": " ".join(f"{r:.0f}" for r in returns),
    }


if __name__ == "__main__":
    main()
