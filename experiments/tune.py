"""Tune one task's defaults with the project's own sweeps, on seeds no reported result uses.

    python experiments/tune.py TASK [--seeds 4] [--first-seed 1000] [--out results/tuning]
    python experiments/tune.py --list

The search for TASK (:data:`SEARCHES`) is a list of settings that change what compiles (network
widths, batch size, replay size, ...) times a grid of traced hyperparameters (``lr``, ``gamma``,
the epsilon schedule, ``target_period``: :data:`dqn_jax.agent.SWEEPABLE`). Each setting is one
compiled program that trains all its grid points x seeds at once (``dqn_jax.sweep.run_sweep``).
Candidates are ranked by the fraction of seeds whose final greedy return reaches the task's
solved score (``dqn_jax.sweep.SOLVED_AT``; none for tasks without one), then by the
IQM over seeds of the final greedy return, then by the mean, then by their setting's seconds
(compile and training of all its grid points x seeds): of equally good candidates the quickest.

Writes ``OUT/TASK.json`` (the command, date, git commit, machine line, seeds, budget and every
candidate's per-seed scores) and ``OUT/TASK.md`` (the ranked table). The chosen values are then
copied by hand into the task's preset in ``dqn_jax/config.py``, which names this file. Seeds
1000 and up are for tuning; the reported results (``dqn-jax train``'s default seed 0 and up)
never see them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Per task: the preset the search starts from, the budget in env steps, the compiled settings,
# and the traced grid each setting sweeps.
SEARCHES: dict[str, dict] = {
    "MountainCar-v0": dict(
        base="default",
        total_steps=120_000,
        settings=[
            # rl-zoo's tuned SB3 DQN (2 x 256, batch 128, replay 10k, an update per 2 steps).
            dict(hidden_sizes=(256, 256), batch_size=128, buffer_size=10_000, train_every=2),
        ],
        grid=dict(lr=(1e-3, 4e-3), gamma=(0.98, 0.99)),
        fixed=dict(eps_end=0.07, eps_duration=24_000, target_period=600),
    ),
    # Round 1 (results/tuning/Acrobot-v1-round1.md, 4 seeds: base "default", 64-64/batch 64
    # against 256-256/batch 128/replay 50k, x lr 6.3e-4/1.5e-3/3e-3 x target_period 250/500)
    # chose the Acrobot-v1 preset, which scored an IQM of -76.4 on seeds 0-15 where its 4
    # tuning seeds gave -71.5. Round 2 (Acrobot-v1-round2.md, 8 seeds: 3-step returns, lr
    # 1.5e-3/3e-3 x target_period 250/500) chose lr 3e-3 (-75.1 on seeds 0-15). Round 3
    # (-round3.md: an update per env step, as rl-zoo's gradient_steps=-1 with train_freq 4, and
    # rl-zoo's best Acrobot agent, QR-DQN with 25 quantiles) chose the update per env step
    # (-71.8 on seeds 0-15). Round 4 (-round4.md: SB3's loss and clipping, Huber and global
    # norm 10, and a target every 500 steps) kept the preset. This round, on fresh tuning seeds
    # 2000 and up (seeds 1000-1007 chose rounds 2-4, and the preset scored 4 points better on
    # them than on seeds 0-15), tries the dueling head, a higher lr and a faster target.
    "Acrobot-v1": dict(
        base="Acrobot-v1",
        total_steps=100_000,
        settings=[dict(), dict(dueling=True)],
        grid=dict(lr=(3e-3, 5e-3), target_period=(125, 250)),
        fixed=dict(),
    ),
    # Searched again for reliability (16 seeds; the first search's 4 seeds tied 5 candidates at
    # 500, and its pick solved 14 of seeds 0-15), in rounds kept in results/tuning/:
    # CartPole-v1-round1.md (lr, target_period 100/250, updates every 2 or 4 steps, batch 128,
    # 128-wide layers) and -round2.md (lr 3e-3/6e-3, target_period 50/100): an update every 2
    # steps, target_period 100 and epsilon over 5,000 steps stayed best; -round3.md (the Huber
    # loss, batch 128, clipping at 10, at lr 3e-3 and 6e-3) kept them; -round4.md (the discount,
    # the final epsilon and a soft target update) kept the preset's point. This round tries what
    # compiles differently: 3-step returns and the dueling head, at two lrs and target periods.
    "CartPole-v1": dict(
        base="default",
        total_steps=50_000,
        settings=[dict(), dict(n_step=3), dict(dueling=True), dict(n_step=3, dueling=True)],
        grid=dict(lr=(1.5e-3, 3e-3), target_period=(100, 250)),
        fixed=dict(eps_duration=5_000),
    ),
}


def git_commit() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def solved_fraction(scores, solved_at: float) -> float:
    """The fraction of ``scores`` at or above ``solved_at``."""
    return sum(float(s) >= solved_at for s in scores) / len(scores)


def ranked(candidates: list[dict]) -> list[dict]:
    """``candidates`` best first: by fraction solved, IQM of the final greedy return, mean,
    then the fewest seconds of their setting."""
    return sorted(
        candidates,
        key=lambda c: (c.get("solved", 0.0), c["iqm"], c["mean"], -c.get("setting_s", 0.0)),
        reverse=True,
    )


def markdown(task: str, record: dict) -> str:
    """The ranked candidates as a Markdown table, with the provenance above it."""
    lines = [
        f"# Tuning {task}",
        "",
        f"`{record['command']}` on {record['date']} at commit {record['commit']}",
        "",
        f"Machine: {record['machine']}",
        "",
        f"Seeds {record['seeds'][0]}..{record['seeds'][-1]} per candidate, "
        f"{record['total_steps']:,} env steps, base preset `{record['base']}` with "
        f"{record['fixed'] or 'nothing'} fixed; {record['wall_s']:.0f} s in all.",
        "",
        f"Solved: final greedy return >= {record.get('solved_at')}; setting s: the compile and "
        "training of the setting's whole sweep (every grid point x seed, one program).",
        "",
        "| rank | setting | point | solved | IQM | mean | setting s | per-seed final greedy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(record["candidates"], 1):
        scores = ", ".join(f"{s:.1f}" for s in c["scores"])
        solved = f"{c['solved']:.2f}" if "solved" in c else "-"
        seconds = f"{c['setting_s']:.0f}" if "setting_s" in c else "-"
        lines.append(
            f"| {i} | {c['setting']} | {c['point']} | {solved} | {c['iqm']:.1f} | "
            f"{c['mean']:.1f} | {seconds} | {scores} |"
        )
    lines += ["", f"Chosen: `{record['chosen']}`", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", nargs="?", help=f"one of: {', '.join(SEARCHES)}")
    p.add_argument("--list", action="store_true", help="print the searches and exit")
    p.add_argument("--seeds", type=int, default=4, help="seeds per candidate")
    p.add_argument("--first-seed", type=int, default=1000, help="tuning seeds start here")
    p.add_argument("--total-steps", type=int, default=None, help="default: the search's budget")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "tuning")
    args = p.parse_args()
    if args.list:
        for task, search in SEARCHES.items():
            print(f"{task}: {json.dumps(search, default=str)}")
        return
    if args.task not in SEARCHES:
        p.error(f"TASK must be one of: {', '.join(SEARCHES)}")
    if args.first_seed < 1000:
        p.error("--first-seed must be >= 1000: seeds below are the reported results' own")
    search = SEARCHES[args.task]
    grid_size = 1
    for values in search["grid"].values():
        grid_size *= len(values)

    from dqn_jax.cli import use_cpu_cores

    use_cpu_cores(["--num-seeds", str(args.seeds * grid_size)])
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import command, machine

    from dqn_jax import stats
    from dqn_jax.config import from_preset
    from dqn_jax.sweep import SOLVED_AT, grid_points, run_sweep

    total_steps = args.total_steps or search["total_steps"]
    candidates = []
    start = time.perf_counter()
    for i, setting in enumerate(search["settings"]):
        config = from_preset(
            search["base"],
            env=args.task,
            total_steps=total_steps,
            num_seeds=args.seeds,
            seed=args.first_seed,
            **search["fixed"],
            **setting,
        )
        print(f"setting {i + 1}/{len(search['settings'])}: {setting or 'the base preset'}")
        setting_start = time.perf_counter()
        result, _ = run_sweep(config, search["grid"], None, progress=False, echo=lambda _: None)
        setting_s = time.perf_counter() - setting_start
        solved_at = SOLVED_AT.get(args.task)
        finals = result.eval_returns.mean(axis=1).reshape(grid_size, args.seeds)
        for point, scores in zip(grid_points(search["grid"]), finals, strict=True):
            candidates.append(
                dict(
                    setting={k: list(v) if isinstance(v, tuple) else v for k, v in setting.items()},
                    point=point,
                    iqm=stats.iqm(scores),
                    mean=float(scores.mean()),
                    **({} if solved_at is None else {"solved": solved_fraction(scores, solved_at)}),
                    setting_s=round(setting_s, 1),
                    scores=[round(float(s), 3) for s in scores],
                )
            )
            print(f"  {point}: IQM {candidates[-1]['iqm']:.1f}")
    candidates = ranked(candidates)
    best = candidates[0]
    record = dict(
        task=args.task,
        command=command(),
        date=time.strftime("%Y-%m-%d"),
        commit=git_commit(),
        machine=machine(),
        base=search["base"],
        total_steps=total_steps,
        seeds=list(range(args.first_seed, args.first_seed + args.seeds)),
        fixed=search["fixed"],
        solved_at=SOLVED_AT.get(args.task),
        wall_s=time.perf_counter() - start,
        candidates=candidates,
        chosen={**search["fixed"], **best["setting"], **best["point"]},
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.task}.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / f"{args.task}.md").write_text(markdown(args.task, record))
    print(markdown(args.task, record))


if __name__ == "__main__":
    main()
