"""One agent config on both environment backends: the JAX loop on gymnax CartPole and the host
loop on Gymnasium CartPole (the same dynamics, checked step by step in
``tests/test_gym_backend.py``). Same seeds, same hyperparameters; the table gives each backend's
final greedy return (10 episodes per seed) with bootstrap CIs, the fraction of seeds at >= 475,
and P(gymnasium > jax).

    python experiments/backends.py [--preset cleanrl-cartpole] [--seeds 8] [--total-steps N]
                                   [--out runs/backends]

The JAX backend runs all seeds in one program; the Gymnasium backend runs one seed at a time
(one host environment loop per run). Writes ``<out>/table.txt`` and one run directory per run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from common import header  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cleanrl-cartpole")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--total-steps", type=int, default=None, help="override the preset's")
    p.add_argument("--out", type=Path, default=Path("runs/backends"))
    args = p.parse_args()

    import jax

    # The host loop's small programs run faster on the calling thread (see the CLI).
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    import numpy as np

    from dqn_jax import host_loop, run, stats
    from dqn_jax.config import from_preset
    from dqn_jax.sweep import SOLVED_AT

    overrides = {"total_steps": args.total_steps} if args.total_steps else {}
    base = from_preset(args.preset, seed=args.seed, **overrides)
    print(header(f"{base.env}, preset {args.preset}: jax vs gymnasium backend, {args.seeds} seeds"))
    scores, walls = {}, {}

    start = time.perf_counter()
    config = base.replace(backend="jax", num_seeds=args.seeds)
    result = run.train(config, args.out / "jax", progress=False, echo=lambda s: None)
    scores["jax"], walls["jax"] = result.eval_returns.mean(axis=1), time.perf_counter() - start
    print(f"jax: {walls['jax']:.0f}s wall, per seed {np.round(scores['jax'], 1)}", flush=True)

    start, per_seed = time.perf_counter(), []
    for i in range(args.seeds):
        config = base.replace(backend="gymnasium", num_seeds=1, seed=args.seed + i)
        out = args.out / f"gymnasium_seed{args.seed + i}"
        res = host_loop.train(config, out, progress=False, echo=lambda s: None)
        per_seed.append(float(res.eval_returns.mean()))
        print(f"gymnasium seed {args.seed + i}: {per_seed[-1]:.1f}", flush=True)
    scores["gymnasium"] = np.array(per_seed)
    walls["gymnasium"] = time.perf_counter() - start

    threshold = SOLVED_AT.get(base.env)
    rows = {k: stats.aggregate(v, threshold=threshold) for k, v in scores.items()}
    est, ci = stats.probability_of_improvement(scores["gymnasium"], scores["jax"])
    text = (
        f"{base.env}, preset {args.preset}, {base.total_steps:,} env steps, seeds "
        f"{args.seed}..{args.seed + args.seeds - 1}: final greedy return (10 episodes per seed)\n"
        f"{stats.format_table(rows)}\n"
        f"P(gymnasium > jax) = {est:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]\n"
        + "\n".join(
            f"{k}: {walls[k]:.0f}s wall, per seed {np.round(v, 1)}" for k, v in scores.items()
        )
    )
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
