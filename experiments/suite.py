"""Every task x variant x seeds at stated budgets, from each task's own defaults, with the
published anchors beside: the results table of the README.

    python experiments/suite.py [--tasks ...] [--variants ...] [--seeds 16] [--out results]
    python experiments/suite.py --quick        # 4 seeds, about a tenth of each budget, ddqn
    python experiments/suite.py --tasks CartPole-v1 Acrobot-v1 --total-steps 100000

Beside the table, the probability of improvement of each variant over dqn (with its CI).

Each (task, variant) is one compiled program running all seeds (sharded over the CPU cores),
started from the task's tuned preset (``dqn_jax.config.preset_for``: what ``dqn-jax train
--env TASK --variant V`` uses) with only the seeds and the budget changed. Scores are the
greedy evaluation (10 episodes per seed) after the last step; curves are the IQM over seeds of
the greedy evaluation after every tenth of the run. Seeds start at 0 (the tuning searches use
1000 and up).

Writes the run directories under RUNS (``runs/suite``, not kept in git; a rerun of a task and
variant replaces its directory) and, under OUT:
``suite.json`` (everything, merged with earlier runs of other tasks or
variants), ``final_returns.csv`` (task, variant, seed, final greedy return), ``curves.csv``
(task, variant, env step, IQM and its 95% CI), ``table.md`` (per task and variant: IQM, mean and
median with 95% stratified-bootstrap CIs, fraction solved, wall time) and ``<task>.png`` (the
curves, with the anchors drawn beside).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import command, machine  # noqa: E402

from dqn_jax.sweep import SOLVED_AT  # noqa: E402

# Budgets in env steps per seed.
BUDGETS = {
    "CartPole-v1": 50_000,
    "Acrobot-v1": 100_000,
    "MountainCar-v0": 120_000,
    "LunarLander-v3": 200_000,
    "Asterix-MinAtar": 1_000_000,
    "Breakout-MinAtar": 1_000_000,
    "Freeway-MinAtar": 1_000_000,
    "SpaceInvaders-MinAtar": 1_000_000,
}
# --quick: about a tenth of each budget, a whole number of each preset's chunks.
QUICK_BUDGETS = {task: steps // 10 for task, steps in BUDGETS.items()}
QUICK_BUDGETS.update({task: 200_000 for task in BUDGETS if task.endswith("-MinAtar")})

# Published results at a budget (env steps), as (label, steps, score). rl-zoo: its tuned SB3 DQN
# (the benchmark table of rl-baselines3-zoo, LunarLander on v2); CleanRL: dqn_jax.py at its
# default 500k steps (its benchmark report).
ANCHORS = {
    "CartPole-v1": [("rl-zoo SB3 DQN", 50_000, 500.0), ("CleanRL dqn_jax", 500_000, 498.4)],
    "Acrobot-v1": [("rl-zoo SB3 DQN", 100_000, -76.6), ("CleanRL dqn_jax", 500_000, -88.9)],
    "MountainCar-v0": [
        ("rl-zoo SB3 DQN", 120_000, -100.8),
        ("CleanRL dqn_jax", 500_000, -188.9),
    ],
    "LunarLander-v3": [("rl-zoo SB3 DQN (v2)", 100_000, 154.4)],
}
VARIANTS = ["dqn", "ddqn", "ddqn_per", "c51", "qr_dqn", "iqn", "m_dqn", "rainbow", "pqn"]


def run_one(task: str, variant: str, seeds: int, total_steps: int, runs: Path) -> dict:
    """Train ``variant`` on ``task`` from its tuned preset; the entry ``suite.json`` keeps."""
    import numpy as np

    from dqn_jax import stats
    from dqn_jax.config import from_preset, preset_for
    from dqn_jax.envs import prepare

    config = from_preset(
        preset_for(None, task),
        env=task,
        variant=variant,
        num_seeds=seeds,
        seed=0,
        total_steps=total_steps,
        num_chunks=10,
        eval_every_chunks=1,
        eval_episodes=10,
    )
    config, _ = prepare(config)
    if config.backend == "gymnasium":
        from dqn_jax.host_loop import train
    else:
        from dqn_jax.run import train
    run_dir = runs / task.replace("/", "_") / variant
    if run_dir.exists():
        # A rerun replaces its entry in suite.json, and so its scratch run directory too.
        print(f"{task} {variant}: replacing the earlier run in {run_dir}", flush=True)
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    result = train(config, run_dir, progress=False, echo=lambda _: None)
    wall = time.perf_counter() - start
    finals = result.eval_returns.mean(axis=1)
    evals = np.loadtxt(run_dir / "evals.csv", delimiter=",", skiprows=1, ndmin=2)
    curve = []
    for step in np.unique(evals[:, 1]):
        column = evals[evals[:, 1] == step][:, 2]
        agg = stats.aggregate(column, n_resamples=1000)
        curve.append([int(step), agg["iqm"], *agg["iqm_ci"]])
    agg = stats.aggregate(finals, threshold=SOLVED_AT.get(task))
    return dict(
        preset=preset_for(None, task),
        total_steps=total_steps,
        seeds=list(range(seeds)),
        final=[round(float(x), 3) for x in finals],
        curve=curve,
        stats={k: v for k, v in agg.items() if k != "ci_valid"},
        wall_s=wall,
        compile_s=result.summary.get("compile_s"),
        machine=machine(),
        command=command(),
        date=time.strftime("%Y-%m-%d"),
    )


def _cell(entry: dict, name: str) -> str:
    low, high = entry["stats"][f"{name}_ci"]
    return f"{entry['stats'][name]:.1f} [{low:.1f}, {high:.1f}]"


def write_outputs(results: dict, out: Path) -> None:
    """``final_returns.csv``, ``curves.csv``, ``table.md`` and one PNG per task, from
    ``results[task][variant]``."""
    import numpy as np

    from dqn_jax import stats

    finals = ["task,variant,seed,final_greedy_return"]
    curves = ["task,variant,env_step,iqm,iqm_low,iqm_high"]
    table = ["# Results", ""]
    for task, by_variant in results.items():
        table += [
            f"## {task}",
            "",
            "| variant | seeds | env steps | IQM [95% CI] | mean [95% CI] | median [95% CI] | "
            "solved | wall s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for variant, e in by_variant.items():
            finals += [
                f"{task},{variant},{s},{r}" for s, r in zip(e["seeds"], e["final"], strict=True)
            ]
            curves += [f"{task},{variant},{','.join(map(str, row))}" for row in e["curve"]]
            solved = e["stats"].get("solved")
            table.append(
                f"| {variant} | {len(e['seeds'])} | {e['total_steps']:,} | {_cell(e, 'iqm')} | "
                f"{_cell(e, 'mean')} | {_cell(e, 'median')} | "
                f"{'' if solved is None else f'{solved:.2f}'} | {e['wall_s']:.0f} |"
            )
        if "dqn" in by_variant:
            base = np.asarray(by_variant["dqn"]["final"])
            table += [""] + [
                f"P({v} > dqn) = {est:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]  "
                for v, e in by_variant.items()
                if v != "dqn"
                for est, ci in [stats.probability_of_improvement(np.asarray(e["final"]), base)]
            ]
        anchors = ANCHORS.get(task, [])
        if anchors:
            table += ["", "Anchors: " + "; ".join(f"{a} {s:g} at {n:,}" for a, n, s in anchors)]
        # Variants of one task may come from different commands (and hours): name each.
        by_command: dict[str, list[str]] = {}
        for variant, e in by_variant.items():
            by_command.setdefault(e["command"], []).append(variant)
        for cmd, names in by_command.items():
            first = by_variant[names[0]]
            table += ["", f"{', '.join(names)}: `{cmd}` on {first['date']}; {first['machine']}"]
        table.append("")
        plot_task(task, by_variant, out / f"{task.replace('/', '_')}.png")
    (out / "final_returns.csv").write_text("\n".join(finals) + "\n")
    (out / "curves.csv").write_text("\n".join(curves) + "\n")
    (out / "table.md").write_text("\n".join(table))


def plot_task(task: str, by_variant: dict, path: Path) -> None:
    """IQM greedy-return curves with CI bands per variant; anchors as points at their budget
    (or a dashed level with its budget in the label when beyond this run's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 4.8))
    budget = max(e["total_steps"] for e in by_variant.values())
    for variant, e in by_variant.items():
        curve = np.asarray(e["curve"], float)
        (line,) = ax.plot(
            curve[:, 0], curve[:, 1], lw=1.8, label=f"{variant} (n={len(e['seeds'])})"
        )
        ax.fill_between(curve[:, 0], curve[:, 2], curve[:, 3], color=line.get_color(), alpha=0.2)
    for (label, steps, score), style in zip(ANCHORS.get(task, []), ("--", ":", "-."), strict=False):
        text = f"{label} ({score:g} at {steps:,})"
        if steps <= budget:
            ax.plot([steps], [score], "k*", ms=11, label=text)
        else:
            ax.axhline(score, color="k", ls=style, lw=1, label=text)
    ax.set(title=f"{task}: greedy return", xlabel="env steps per seed", ylabel="IQM, 95% CI band")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=list(BUDGETS))
    p.add_argument("--variants", nargs="+", default=None, help=f"default: {' '.join(VARIANTS)}")
    p.add_argument("--seeds", type=int, default=None, help="default: 16 (--quick: 4)")
    p.add_argument("--quick", action="store_true", help="4 seeds, QUICK_BUDGETS, ddqn only")
    p.add_argument("--total-steps", type=int, default=None, help="one budget for every task")
    p.add_argument("--out", type=Path, default=ROOT / "results")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "suite", help="run directories")
    args = p.parse_args()
    unknown = [t for t in args.tasks if t not in BUDGETS]
    if unknown:
        p.error(f"unknown task(s) {unknown}: must be among {', '.join(BUDGETS)}")
    seeds = args.seeds or (4 if args.quick else 16)
    variants = args.variants or (["ddqn"] if args.quick else VARIANTS)

    from dqn_jax.cli import use_cpu_cores

    use_cpu_cores(["--num-seeds", str(seeds)])
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "suite.json"
    for task in args.tasks:
        budget = args.total_steps or (QUICK_BUDGETS if args.quick else BUDGETS)[task]
        for variant in variants:
            entry = run_one(task, variant, seeds, budget, args.runs)
            # Read again before writing: another suite run may have written other tasks since.
            results = json.loads(saved.read_text()) if saved.exists() else {}
            results.setdefault(task, {})[variant] = entry
            print(
                f"{task} {variant}: IQM {entry['stats']['iqm']:.1f} over {seeds} seeds, "
                f"{entry['wall_s']:.0f} s",
                flush=True,
            )
            saved.write_text(json.dumps(results, indent=1) + "\n")
            write_outputs(results, args.out)
    print(f"wrote {args.out}/table.md")


if __name__ == "__main__":
    main()
