"""A learning-rate x seed grid in one compile: the default CartPole agent at several learning
rates, 16 seeds each, with IQM and 95% CIs per rate and learning curves.

    python experiments/lr_sweep.py [--lrs 3e-4 1e-3 3e-3 1e-2] [--seeds 16] [--out runs/lr_sweep]

Equivalent CLI: dqn-jax sweep --sweep lr=3e-4,1e-3,3e-3,1e-2 --num-seeds 16
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3, 1e-2])
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--total-steps", type=int, default=100_000)
    p.add_argument("--out", type=Path, default=Path("runs/lr_sweep"))
    args = p.parse_args()

    from dqn_jax.cli import use_cpu_cores

    use_cpu_cores(["--num-seeds", str(args.seeds * len(args.lrs))])
    import numpy as np

    from dqn_jax.config import from_preset
    from dqn_jax.plots import binned_returns, plot_learning_curves
    from dqn_jax.sweep import run_sweep

    config = from_preset("default", num_seeds=args.seeds, total_steps=args.total_steps)
    result, _ = run_sweep(config, {"lr": args.lrs}, args.out, progress=False)
    curves = np.stack([binned_returns(e, config.total_steps) for e in result.episodes])
    curves = curves.reshape(len(args.lrs), args.seeds, -1)
    x = np.linspace(0, config.total_steps, curves.shape[-1] + 1)[1:]
    plot_learning_curves(
        {f"lr={lr:g}": c for lr, c in zip(args.lrs, curves, strict=True)},
        x,
        args.out / "curves.png",
        "CartPole-v1 ddqn: learning rate sweep",
        "training return",
    )
    print(f"table and curves in {args.out}")


if __name__ == "__main__":
    main()
