"""Throughput of the ``purejaxrl-cartpole`` preset (PureJaxRL dqn.py's default work) with 1 and 8
seeds: compile seconds, run seconds, env steps per second, final greedy return.

    python benchmarks/throughput.py [--seeds 1 8] [--preset purejaxrl-cartpole] [--total-steps N]

Each seed count runs in its own process, set up as the ``dqn-jax`` CLI sets itself up (on the
CPU, seeds are split over one XLA device per core; see ``dqn_jax.cli.use_cpu_cores``).
PureJaxRL's figures on this machine (from the issue): 4.0 s compile, 11.2 s run for one seed,
63 s for 8 seeds vmapped, return 500.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def one(preset: str, seeds: int, total_steps: int | None) -> dict:
    """Run one configuration in this process and return its row."""
    from dqn_jax.cli import use_cpu_cores

    use_cpu_cores(["--num-seeds", str(seeds)])
    from dqn_jax.config import from_preset
    from dqn_jax.run import train

    overrides = {"num_seeds": seeds}
    if total_steps:
        overrides["total_steps"] = total_steps
    config = from_preset(preset, **overrides)
    s = train(config, None, progress=False, echo=lambda _: None).summary
    return {
        "seeds": seeds,
        "devices": len(s["devices"]),
        "env steps/seed": f"{config.total_steps:,}",
        "compile s": f"{s['compile_s']:.1f}",
        "run s": f"{s['run_s']:.1f}",
        "env steps/s (all seeds)": f"{s['env_steps_per_s']:,.0f}",
        "run s per seed": f"{s['run_s'] / seeds:.2f}",
        "final eval return (mean)": f"{s['final_eval_return_mean']:.1f}",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="purejaxrl-cartpole")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 8])
    p.add_argument("--total-steps", type=int, default=None, help="override the preset's")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(one(args.preset, args.child, args.total_steps)))
        return

    from common import child_rows, header, table

    print(header(f"dqn-jax throughput, preset {args.preset}"))
    extra = ["--total-steps", str(args.total_steps)] if args.total_steps else []
    argsets = [["--preset", args.preset, "--child", str(n), *extra] for n in args.seeds]
    rows = []
    for row in child_rows(__file__, argsets):
        rows.append(row)
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print("\nall rows:")
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
