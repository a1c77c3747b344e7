"""JAX's persistent compilation cache for the CLI: the same ``dqn-jax train`` run three
times as whole processes, with the cache off, into an empty cache directory (cold) and again
(warm); compile seconds from each run's ``summary.json`` and the whole process's wall time.

    python benchmarks/compile_cache.py [--env CartPole-v1] [--num-seeds 8] [-- train flags]
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import header, table  # noqa: E402


def run(argv: list[str], out: Path, cache: str) -> dict:
    env = {**os.environ, "DQN_JAX_COMPILE_CACHE": cache}
    start = time.perf_counter()
    subprocess.run([*argv, "--out", str(out)], env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    returns = summary["final_eval_return_per_seed"]
    return {
        "wall s": f"{wall:.1f}",
        "compile s": f"{summary['compile_s']:.2f}",
        "run s": f"{summary['run_s']:.1f}",
        "solved (>= 475)": f"{sum(r >= 475 for r in returns)}/{len(returns)}",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--num-seeds", type=int, default=8)
    p.add_argument("extra", nargs="*", help="more dqn-jax train flags (after --)")
    args = p.parse_args()
    argv = [sys.executable, "-m", "dqn_jax.cli", "train", "--env", args.env, "--no-progress"]
    argv += ["--num-seeds", str(args.num_seeds), *args.extra]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = str(Path(tmp) / "cache")
        for name, setting in (("cache off", "off"), ("cold cache", cache), ("warm cache", cache)):
            rows.append({"run": name, **run(argv, Path(tmp) / name.replace(" ", "-"), setting)})
        entries = len(list(Path(cache).iterdir()))
    print(header("Persistent compilation cache: the same dqn-jax train run three times"))
    print(table(rows, ["run", "wall s", "compile s", "run s", "solved (>= 475)"]))
    cold, warm = float(rows[1]["compile s"]), float(rows[2]["compile s"])
    print(f"\nwarm / cold compile: {warm / cold:.2f}; cache entries: {entries}")


if __name__ == "__main__":
    main()
