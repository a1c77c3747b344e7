"""``dqn-jax tune``: the same search budget with a population of P trials per compiled program,
for each P asked, as whole processes in one run; wall time and the best IQM found. Then the
default preset on the same seeds, the score a search should reach.

    python benchmarks/search.py [--populations 1 16] [--trials 16] [--num-seeds 8]
                                [--total-steps 50000] [--cache off|on]

Each side is a fresh study (TPE, the same sampler seed) in a temporary directory; with P=1 every
trial is its own compile. ``--cache off`` (the default) runs every process without the
persistent compilation cache, so P=1 pays every compile as a new user would.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import header, table  # noqa: E402

PARAMS = [
    "lr=log:3e-4:1e-2",
    "gamma=0.95:0.999",
    "target_period=100:1000",
    "eps_duration=2000:20000",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--populations", type=int, nargs="+", default=[1, 16])
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--num-seeds", type=int, default=8)
    p.add_argument("--total-steps", type=int, default=50_000)
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--cache", choices=["off", "on"], default="off")
    args = p.parse_args()
    flags = ["--env", args.env, "--num-seeds", str(args.num_seeds)]
    flags += ["--total-steps", str(args.total_steps), "--no-progress"]
    cache = ["--no-compile-cache"] if args.cache == "off" else []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for population in args.populations:
            out = Path(tmp) / f"p{population}"
            argv = [sys.executable, "-m", "dqn_jax.cli", *cache, "tune", *flags]
            argv += [a for item in PARAMS for a in ("--param", item)]
            argv += ["--trials", str(args.trials), "--population", str(population)]
            start = time.perf_counter()
            subprocess.run(
                [*argv, "--out", str(out)], check=True, capture_output=True, env=os.environ
            )
            wall = time.perf_counter() - start
            import optuna

            study = optuna.load_study(study_name="dqn-jax", storage=f"sqlite:///{out / 'study.db'}")
            rows.append(
                {
                    "population": population,
                    "trials": len(study.trials),
                    "compiles": -(-args.trials // population),
                    "wall s": f"{wall:.1f}",
                    "best IQM": f"{study.best_value:.1f}",
                    "best params": json.dumps(
                        {k: round(v, 5) for k, v in study.best_params.items()}
                    ),
                }
            )
            print(rows[-1], flush=True)
        start = time.perf_counter()
        argv = [sys.executable, "-m", "dqn_jax.cli", *cache, "train", *flags, "--preset", "default"]
        subprocess.run(
            [*argv, "--out", str(Path(tmp) / "default")], check=True, capture_output=True
        )
        summary = json.loads((Path(tmp) / "default" / "summary.json").read_text())
    from dqn_jax import stats

    default_iqm = stats.iqm(summary["final_eval_return_per_seed"])
    base = float(rows[0]["wall s"])
    for row in rows:
        row["wall / first"] = f"{float(row['wall s']) / base:.2f}"
    print(
        header(
            f"dqn-jax tune, {args.trials} trials x {args.num_seeds} seeds x "
            f"{args.total_steps:,} steps on {args.env}"
        )
    )
    cols = ["population", "trials", "compiles", "wall s", "wall / first", "best IQM", "best params"]
    print(table(rows, cols))
    print(
        f"\ndefault preset, same seeds and budget: IQM {default_iqm:.1f} "
        f"({time.perf_counter() - start:.1f} s)"
    )


if __name__ == "__main__":
    main()
