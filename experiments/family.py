"""The DQN family side by side: every variant x many seeds on CartPole-v1 and Acrobot-v1, with
honest statistics: IQM, mean and median with 95% stratified-bootstrap CIs, the fraction of seeds
that solved the task, the probability of improvement over DQN, and IQM learning curves.

    python experiments/family.py [--seeds 16] [--envs CartPole-v1 Acrobot-v1]
                                 [--variants dqn_simple dqn ddqn ddqn_per c51 qr_dqn iqn
                                  m_dqn rainbow] [--total-steps 100000] [--out runs/family]

Each (env, variant) is one compiled program running all seeds (sharded over the CPU cores).
Every variant runs the ``default`` preset with its own tuned values
(``dqn_jax.config.VARIANT_TUNING``), the same for both environments; scores are the final
greedy evaluation (10 episodes) of each seed. Writes ``<out>/<env>/table.txt``,
``curves.png`` (IQM of the training return over env steps, 95% CI bands) and one run directory
per variant.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from common import header  # noqa: E402

from dqn_jax.cli import use_cpu_cores  # noqa: E402
from dqn_jax.config import VARIANT_NAMES  # noqa: E402

LEARNING_VARIANTS = [v for v in VARIANT_NAMES if v != "random"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--envs", nargs="+", default=["CartPole-v1", "Acrobot-v1"])
    p.add_argument("--variants", nargs="+", default=LEARNING_VARIANTS)
    p.add_argument("--total-steps", type=int, default=100_000)
    p.add_argument("--out", type=Path, default=Path("runs/family"))
    args = p.parse_args()
    use_cpu_cores(["--num-seeds", str(args.seeds)])

    import numpy as np

    from dqn_jax import stats
    from dqn_jax.config import from_preset
    from dqn_jax.plots import binned_returns, plot_learning_curves
    from dqn_jax.run import train
    from dqn_jax.sweep import SOLVED_AT

    print(header(f"{len(args.variants)} variants x {args.seeds} seeds"))
    for env in args.envs:
        scores, curves, rows = {}, {}, {}
        for variant in args.variants:
            config = from_preset(
                "default",
                env=env,
                variant=variant,
                num_seeds=args.seeds,
                total_steps=args.total_steps,
            )
            start = time.perf_counter()
            result = train(config, args.out / env / variant, progress=False, echo=lambda s: None)
            seconds = time.perf_counter() - start
            scores[variant] = result.eval_returns.mean(axis=1)
            curves[variant] = np.stack(
                [binned_returns(e, config.total_steps) for e in result.episodes]
            )
            rows[variant] = stats.aggregate(scores[variant], threshold=SOLVED_AT.get(env))
            print(
                f"{env} {variant}: {seconds:.0f}s wall "
                f"(compile {result.summary['compile_s']:.1f}s, run {result.summary['run_s']:.1f}s)",
                flush=True,
            )
        table = stats.format_table(rows)
        base = "dqn" if "dqn" in scores else args.variants[0]
        poi = [
            f"P({v} > {base}) = {est:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"
            for v in scores
            if v != base
            for est, ci in [stats.probability_of_improvement(scores[v], scores[base])]
        ]
        text = f"{env}: final greedy return, {args.seeds} seeds\n{table}\n" + "\n".join(poi)
        print(text, flush=True)
        (args.out / env).mkdir(parents=True, exist_ok=True)
        (args.out / env / "table.txt").write_text(text + "\n")
        x = np.linspace(0, args.total_steps, 51)[1:]
        plot_learning_curves(
            curves,
            x,
            args.out / env / "curves.png",
            f"{env}: training return per episode",
            "training return",
        )


if __name__ == "__main__":
    main()
