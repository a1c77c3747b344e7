"""Cost of a seed: wall time of 1, 8, 32 and 128 seeds of the same run in one compiled program.

    python benchmarks/sweep_scaling.py [--seeds 1 8 32 128] [--preset default] [--total-steps N]

Each seed count runs in its own process set up as the CLI sets itself up (on the CPU the seeds
are split over one XLA device per core when they divide evenly; one seed keeps one device).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def one(preset: str, seeds: int, total_steps: int) -> dict:
    """Run ``seeds`` seeds of the preset in this process; return the timings."""
    from dqn_jax.cli import use_cpu_cores

    use_cpu_cores(["--num-seeds", str(seeds)])
    from dqn_jax.config import from_preset
    from dqn_jax.run import train

    config = from_preset(preset, num_seeds=seeds, total_steps=total_steps, eval_episodes=0)
    s = train(config, None, progress=False, echo=lambda _: None).summary
    return {
        "seeds": seeds,
        "devices": len(s["devices"]),
        "compile_s": s["compile_s"],
        "run_s": s["run_s"],
        "steps_per_s": s["env_steps_per_s"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--total-steps", type=int, default=20_000)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(one(args.preset, args.child, args.total_steps)))
        return

    from common import child_rows, header, table

    print(header(f"seed scaling, preset {args.preset}, {args.total_steps:,} env steps per seed"))
    argsets = [
        ["--preset", args.preset, "--child", str(n), "--total-steps", str(args.total_steps)]
        for n in args.seeds
    ]
    rows, base = [], None
    for r in child_rows(__file__, argsets):
        n = r["seeds"]
        if n == 1:
            base = r["run_s"]
        rows.append(
            {
                "seeds": n,
                "devices": r["devices"],
                "compile s": f"{r['compile_s']:.1f}",
                "run s": f"{r['run_s']:.2f}",
                "x one seed's run s": f"{r['run_s'] / base:.1f}" if base else "",
                "env steps/s (all)": f"{r['steps_per_s']:,.0f}",
                "env steps/s per seed": f"{r['steps_per_s'] / n:,.0f}",
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print("\nall rows:")
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
