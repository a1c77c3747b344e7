"""A made-up run directory for the report tests (tests/test_html_report.py and
tests/test_report_browser.py): the files the drivers write, without training."""

import csv
import json

import numpy as np
from helpers import SMALL

from dqn_jax.config import Config

EPISODES = (250, 130)  # per run: more than the 100-episode window, and fewer
EVAL_STEPS = (1_000, 2_000)


def make_run(path, *, finished=True, sweep=False, seed=7):
    """A run directory as the drivers write it, with made-up numbers: 2 runs (4 in a sweep of
    2 points), 4 chunks, evaluations at chunk 2 and at the end, 2 probe states."""
    rng = np.random.default_rng(seed)
    num_runs = 4 if sweep else 2
    episodes = EPISODES if not sweep else EPISODES * 2
    config = Config(**{**SMALL, "num_seeds": num_runs, "num_chunks": 4, "probe_states": 2})
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config.to_dict()))
    runs = []
    with (path / "episodes.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "episode", "env_step", "length", "return"])
        for run, n in enumerate(episodes):
            lengths = rng.integers(8, 60, n)
            returns = lengths + rng.normal(0, 3, n).round(2)
            steps = np.cumsum(lengths)
            for i in range(n):
                w.writerow([run, i + 1, steps[i], lengths[i], f"{returns[i]:g}"])
            runs.append(np.stack([steps, lengths, returns], axis=1))
    evals = rng.uniform(10, 200, (num_runs, 2)).round(1)
    records = []
    for chunk in range(1, 5):
        learned = chunk > 1
        record = {
            "chunk": chunk,
            "env_step": 500 * chunk,
            "loss": [float(rng.uniform(0, 2)) if learned else None for _ in range(num_runs)],
            "q_mean": [float(rng.uniform(0, 9)) if learned else None for _ in range(num_runs)],
        }
        if chunk == 2:
            record["eval"] = evals[:, 0].tolist()
        records.append(record)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with (path / "q_probes.csv").open("w") as f:
        f.write("seed,env_step,probe,action,q\n")
        for run in range(num_runs):
            for step in (500, 1000, 1500, 2000):
                for probe in range(2):
                    for action in range(2):
                        f.write(f"{run},{step},{probe},{action},{step / 1000 + probe + action}\n")
    if finished:
        with (path / "evals.csv").open("w") as f:
            f.write("run,env_step,mean_return,min_return,max_return\n")
            for k, step in enumerate(EVAL_STEPS):
                for run in range(num_runs):
                    v = evals[run, k]
                    f.write(f"{run},{step},{v:g},{v - 1:g},{v + 1:g}\n")
        seeds = [0, 1] * 2 if sweep else [0, 1]
        summary = {
            "env": config.env,
            "seeds": seeds,
            "total_env_steps": 2000 * num_runs,
            "run_s": 1.5,
            "compile_s": 3.0,
            "env_steps_per_s": 2000 * num_runs / 1.5,
            "final_eval_return_per_seed": evals[:, 1].tolist(),
        }
        (path / "summary.json").write_text(json.dumps(summary))
    if sweep:
        sweep = {
            "grid": {"lr": [0.001, 0.003]},
            "points": [{"lr": 0.001}, {"lr": 0.003}],
            "seeds": [0, 1],
            "final_eval_return": evals[:, 1].reshape(2, 2).tolist(),
        }
        (path / "sweep.json").write_text(json.dumps(sweep))
    return runs, evals
