"""Throughput of the ``purejaxrl-cartpole`` preset (PureJaxRL dqn.py's default work) with 1 and 8
seeds: compile seconds, run seconds, env steps per second, final greedy return.

    python benchmarks/throughput.py [--seeds 1 8] [--preset purejaxrl-cartpole] [--total-steps N]

PureJaxRL's own figures on this machine (from the issue): 4.0 s compile, 11.2 s run for one seed,
63 s for 8 seeds vmapped, return 500.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import header, table  # noqa: E402

from dqn_jax.config import from_preset  # noqa: E402
from dqn_jax.run import train  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="purejaxrl-cartpole")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 8])
    p.add_argument("--total-steps", type=int, default=None, help="override the preset's")
    args = p.parse_args()
    print(header(f"dqn-jax throughput, preset {args.preset}"))
    rows = []
    for n in args.seeds:
        overrides = {"num_seeds": n}
        if args.total_steps:
            overrides["total_steps"] = args.total_steps
        config = from_preset(args.preset, **overrides)
        result = train(config, None, progress=False, echo=lambda s: None)
        s = result.summary
        rows.append(
            {
                "seeds": n,
                "env steps/seed": f"{config.total_steps:,}",
                "compile s": f"{s['compile_s']:.1f}",
                "run s": f"{s['run_s']:.1f}",
                "env steps/s (all seeds)": f"{s['env_steps_per_s']:,.0f}",
                "run s per seed": f"{s['run_s'] / n:.2f}",
                "final eval return (mean over seeds)": f"{s['final_eval_return_mean']:.1f}",
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print("\nall rows:")
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
