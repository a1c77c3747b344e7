"""PQN's speed and returns beside purejaxql's own code on the same work, each run as its own
process in one invocation of this script.

    python benchmarks/pqn.py [--seeds 1 4] [--preset purejaxql-cartpole] [--repeats R]
                             [--purejaxql-python PATH --purejaxql-dir PATH]

- ``ours``: ``dqn-jax train --preset PRESET --num-seeds S --no-progress --out TMP`` (the
  ``purejaxql-cartpole`` preset is purejaxql's ``pqn_cartpole.yaml``: see dqn_jax/config.py),
  with the persistent compilation cache off (``--no-compile-cache``: the first run a user makes;
  a second run compiles from the cache).
- ``purejaxql`` (only with both paths): ``--purejaxql-dir`` is the folder holding
  ``pqn_gymnax.py`` and ``config/`` (``config.yaml``, ``alg/pqn_cartpole.yaml``) from
  github.com/mttga/purejaxql; ``--purejaxql-python`` the Python of a venv with its pins (jax
  0.4.38, gymnax 0.0.6, flax, optax, hydra-core, omegaconf, safetensors; ``../shared/peers/
  setup.sh`` in the project's shared folder makes one). The launcher below loads its
  ``make_train`` as its ``single_run`` does (the yaml merged into ``config.yaml``), turns its
  in-training greedy tests off (``TEST_DURING_TRAINING=False``: our side evaluates only at the
  end), vmaps it over S seeds and times compile and run apart. Nothing of purejaxql is
  imported here.

Columns: ``wall s`` the whole process (interpreter start, imports, compiles, run and, for ours,
10 greedy evaluation episodes per seed and the run directory's files); ``compile s`` and ``run
s`` each side's own (ours: summary.json; purejaxql: ``lower().compile()`` and the compiled call);
``greedy return`` ours' final evaluation per seed; purejaxql's ``train return`` is its
LogWrapper's mean return of the episodes finished in the last update, per seed (it has no
evaluation with tests off). ``ours/purejaxql`` ratios are within one repeat.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, table  # noqa: E402

LAUNCHER = r"""
import importlib.util, json, os, sys, time, types
from omegaconf import OmegaConf
sys.modules["wandb"] = types.ModuleType("wandb")  # only called when WANDB_MODE is not disabled
import jax
root, seeds = sys.argv[1], int(sys.argv[2])
spec = importlib.util.spec_from_file_location("pqn_gymnax", os.path.join(root, "pqn_gymnax.py"))
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
base = OmegaConf.load(os.path.join(root, "config", "config.yaml"))
alg = OmegaConf.load(os.path.join(root, "config", "alg", "pqn_cartpole.yaml"))
base.alg = OmegaConf.merge(base.alg, alg)
base.alg.TEST_DURING_TRAINING = False
cfg = OmegaConf.to_container(base)
config = {**cfg, **cfg["alg"]}
config["NUM_SEEDS"] = seeds
rngs = jax.random.split(jax.random.PRNGKey(config["SEED"]), seeds)
train = jax.jit(jax.vmap(mod.make_train(config)))
t0 = time.perf_counter(); compiled = train.lower(rngs).compile(); t1 = time.perf_counter()
out = jax.block_until_ready(compiled(rngs)); t2 = time.perf_counter()
ret = out["metrics"]["returned_episode_returns"][:, -1]
print(json.dumps(dict(compile_s=t1 - t0, run_s=t2 - t1, train_return=[float(r) for r in ret],
                      jax=jax.__version__)))
"""


def ours(preset: str, seeds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["dqn-jax", "train", "--preset", preset, "--num-seeds", str(seeds)]
        cmd += ["--no-progress", "--no-compile-cache", "--out", f"{tmp}/run"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        s = json.loads(Path(tmp, "run", "summary.json").read_text())
    returns = s["final_eval_return_per_seed"]
    return {
        "side": "ours",
        "wall s": f"{wall:.1f}",
        "compile s": f"{s['compile_s']:.1f}",
        "run s": f"{s['run_s']:.1f}",
        "return": "greedy " + " / ".join(f"{r:.1f}" for r in returns),
        "_wall": wall,
        "_run": s["run_s"],
    }


def theirs(python: str, root: str, seeds: int) -> dict:
    cmd = [python, "-c", LAUNCHER, root, str(seeds)]
    # A fresh working directory: `python -c` puts it first on sys.path, where a stray
    # `gym.py` once shadowed the gym that gymnax 0.0.6 imports.
    with tempfile.TemporaryDirectory() as cwd:
        start = time.perf_counter()
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if out.returncode:
        tail = "\n".join(out.stderr.splitlines()[-20:])
        raise SystemExit(f"purejaxql's side failed ({out.returncode}):\n{tail}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "side": f"purejaxql (jax {r['jax']})",
        "wall s": f"{wall:.1f}",
        "compile s": f"{r['compile_s']:.1f}",
        "run s": f"{r['run_s']:.1f}",
        "return": "train " + " / ".join(f"{x:.1f}" for x in r["train_return"]),
        "_wall": wall,
        "_run": r["run_s"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="purejaxql-cartpole")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 4])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--purejaxql-python")
    p.add_argument("--purejaxql-dir")
    args = p.parse_args()
    peer = bool(args.purejaxql_python and args.purejaxql_dir)
    print(header(f"dqn-jax {args.preset} (PQN) beside purejaxql's pqn_gymnax.py, whole processes"))
    if peer:
        print(f"purejaxql: {os.path.abspath(args.purejaxql_dir)} run by {args.purejaxql_python}\n")
    rows = []
    for seeds in args.seeds:
        for repeat in range(1, args.repeats + 1):
            a = ours(args.preset, seeds)
            pair = [a]
            if peer:
                b = theirs(args.purejaxql_python, args.purejaxql_dir, seeds)
                a["ours/purejaxql wall"] = f"{a['_wall'] / b['_wall']:.2f}"
                a["ours/purejaxql run"] = f"{a['_run'] / b['_run']:.2f}"
                pair.append(b)
            for row in pair:
                row.update(seeds=seeds, repeat=repeat)
            rows += pair
            print(table(rows[-len(pair) :], COLUMNS), flush=True)
    print("\n" + table(rows, COLUMNS))


COLUMNS = ["seeds", "repeat", "side", "wall s", "compile s", "run s", "return"]
COLUMNS += ["ours/purejaxql wall", "ours/purejaxql run"]

if __name__ == "__main__":
    main()
