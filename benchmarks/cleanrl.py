"""Wall time of a CleanRL preset next to CleanRL's own script, both run on this machine in one
invocation, each as its own process timed whole: ``--algo dqn`` (the ``cleanrl-cartpole``
preset against ``dqn_jax.py``, what ``benchmarks/gymnasium_throughput.py`` runs) or ``--algo
c51`` (``cleanrl-c51-cartpole`` against ``c51_jax.py``; the preset's target takes its next
action from the target network, as ``c51_jax.py`` does, not the Double-Q target of ``--variant
c51``).

    python benchmarks/cleanrl.py --algo dqn|c51 --cleanrl-python PATH --cleanrl-dir PATH
                                 [--total-steps N] [--repeats R] [--cleanrl-host-tuning]
                                 [--ours-backend gymnasium|jax]

``--cleanrl-python``: the Python of a venv with CleanRL's dependencies (jax, flax, optax, gymnasium
0.29, tyro, torch for its tensorboard writer and replay buffer); ``--cleanrl-dir``: the folder with
``dqn_jax.py``/``c51_jax.py`` and ``cleanrl_utils/buffers.py`` (``../shared/peers/setup.sh`` in
the project's shared folder makes both).
Nothing of CleanRL is imported here.

Per repeat, one after the other:

- ``ours``: ``dqn-jax train --preset PRESET --no-progress --out TMP`` (the CLI gives
  the gymnasium host loop its own JAX/XLA settings; ``--ours-backend jax`` adds ``--backend jax``:
  gymnax's CartPole-v1, the same dynamics, in one compiled program). With ``--total-steps N`` it
  also gets ``--eps-duration N/2``: CleanRL's epsilon reaches its end at half of
  ``--total-timesteps`` (``exploration_fraction`` 0.5), the preset's 250,000 is half of 500,000.
  Its wall includes the 10 greedy evaluation episodes at the end (CleanRL does none).
- ``CleanRL``: ``dqn_jax.py``/``c51_jax.py [--total-timesteps N]`` with its defaults, run from a
  temporary working directory (its ``runs/`` tensorboard files go there), through a few-line
  launcher that, only where this JAX has dropped them, accepts the ``a_min=``/``a_max=``
  keywords its ``jnp.clip`` calls use (same results; without it the script fails at its first
  update). Its process gets the same environment as ours; ``--cleanrl-host-tuning`` also gives
  it the settings
  ``dqn-jax train`` uses for the host loop (``XLA_FLAGS`` scheduler flag, no CPU async dispatch).

Columns: ``wall s`` is the whole process (interpreter start, imports, compiles, the run, for ours
the final evaluation); ``steps/s`` = env steps / wall s; ``in-loop steps/s`` is each side's own
figure (ours: summary.json ``env_steps_per_s``, the loop without compiles or evaluation; CleanRL:
its last ``SPS:`` line, steps since its loop started / time, which includes the compile of its
update, traced at the first one); ``compile s``: ours' summary ``compile_s`` (CleanRL's compiles
are not reported apart). ``greedy return``: ours'
``final_eval_return_mean`` (10 greedy episodes after training); CleanRL has no evaluation unless
``--save-model`` (which evaluates at epsilon 0.05, needs ``cleanrl_utils/evals`` and adds time), so
it has none. ``last-10 return``: the mean return of the last 10 training episodes (epsilon-greedy at
the end epsilon, 0.05), for both: ours from ``episodes.csv``, CleanRL from its
``episodic_return`` lines. ``ours/CleanRL wall``: ratio of the two processes' wall in the same
repeat (< 1: ours is faster).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ALGOS = {"dqn": ("cleanrl-cartpole", "dqn_jax.py"), "c51": ("cleanrl-c51-cartpole", "c51_jax.py")}
"""``--algo``: (our preset, CleanRL's script); both presets are that script's default work."""
PRESET_STEPS = 500_000
HOST_LOOP_XLA_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"  # dqn_jax.cli's

# Run by CleanRL's Python: argv = [script, tune, *script args]. A compatibility shim for
# jnp.clip(a_min=, a_max=) (removed from JAX), then the script as __main__ from its own folder.
LAUNCHER = """
import inspect, os, runpy, sys
script, tune = sys.argv[1], sys.argv[2] == "1"
import jax
import jax.numpy as jnp
if tune:
    jax.config.update("jax_cpu_enable_async_dispatch", False)
if "a_min" not in inspect.signature(jnp.clip).parameters:
    _clip = jnp.clip
    def clip(x, min=None, max=None, *, a_min=None, a_max=None, **kw):
        return _clip(x, min if a_min is None else a_min, max if a_max is None else a_max, **kw)
    jnp.clip = clip
    print("launcher: jnp.clip a_min/a_max shim on", flush=True)
sys.argv = [script, *sys.argv[3:]]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
runpy.run_path(script, run_name="__main__")
"""

EPISODE_RE = re.compile(r"global_step=(\d+), episodic_return=\[?([-\d.eE+]+)\]?")
SPS_RE = re.compile(r"^SPS: (\d+)", re.M)


def md_table(rows: list[dict], columns: list[str]) -> str:
    """Markdown table of ``rows`` (dicts) over ``columns``, padded to line up in plain text."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), 3, *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(values):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def git_blob_id(path: Path) -> str:
    """``git hash-object`` of ``path``: matches the blob in CleanRL's history it was taken from."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def dqn_jax_command(
    preset: str, out: Path, total_steps: int | None, backend: str = "gymnasium"
) -> list[str]:
    exe = Path(sys.executable).with_name("dqn-jax")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "dqn_jax.cli"]
    cmd += ["train", "--preset", preset, "--no-progress", "--out", str(out)]
    if backend != "gymnasium":  # the preset's own
        cmd += ["--backend", backend]
    if total_steps is not None and total_steps != PRESET_STEPS:
        cmd += ["--total-steps", str(total_steps), "--eps-duration", str(total_steps // 2)]
    return cmd


def cleanrl_command(python: str, script: Path, total_steps: int | None, tune: bool) -> list[str]:
    cmd = [python, "-c", LAUNCHER, str(script), "1" if tune else "0"]
    if total_steps is not None:
        cmd += ["--total-timesteps", str(total_steps)]
    return cmd


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-30:])
        raise SystemExit(f"failed ({out.returncode}): {shlex.join(cmd)}\n{tail}")
    return wall, out.stdout


def ours_row(run_dir: Path, wall: float, steps: int) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    with (run_dir / "episodes.csv").open() as f:
        returns = [float(r["return"]) for r in csv.DictReader(f) if r["run"] == "0"]
    greedy = s.get("final_eval_return_mean")
    return {
        "side": "ours",
        "wall s": f"{wall:.1f}",
        "steps/s": f"{steps / wall:,.0f}",
        "in-loop steps/s": f"{s['env_steps_per_s']:,.0f}",
        "compile s": f"{s['compile_s']:.1f}",
        "greedy return": "-" if greedy is None else f"{greedy:.1f} ({s['eval_episodes']} ep)",
        "last-10 return": f"{statistics.fmean(returns[-10:]):.1f}" if returns else "-",
        "episodes": len(returns),
    }


def cleanrl_row(stdout: str, wall: float, steps: int) -> dict:
    returns = [float(m.group(2)) for m in EPISODE_RE.finditer(stdout)]
    sps = SPS_RE.findall(stdout)
    return {
        "side": "CleanRL",
        "wall s": f"{wall:.1f}",
        "steps/s": f"{steps / wall:,.0f}",
        "in-loop steps/s": f"{int(sps[-1]):,}" if sps else "-",
        "compile s": "-",
        "greedy return": "- (none)",
        "last-10 return": f"{statistics.fmean(returns[-10:]):.1f}" if returns else "-",
        "episodes": len(returns),
    }


def cleanrl_versions(python: str) -> str:
    code = (
        "import platform, jax, gymnasium, torch; "
        "print(f'python {platform.python_version()}, jax {jax.__version__}, "
        "gymnasium {gymnasium.__version__}, torch {torch.__version__}')"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or f"(versions unreadable: {out.stderr.strip()[-200:]})"


def main(default_algo: str | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", choices=sorted(ALGOS), default=default_algo, required=not default_algo)
    p.add_argument("--cleanrl-python", required=True, help="Python of CleanRL's venv")
    p.add_argument("--cleanrl-dir", required=True, type=Path, help="folder with CleanRL's script")
    p.add_argument("--total-steps", type=int, default=None, help=f"default: {PRESET_STEPS:,}")
    p.add_argument("--repeats", type=int, default=1, help="ours, CleanRL, ours, CleanRL, ...")
    p.add_argument(
        "--ours-backend",
        choices=["gymnasium", "jax"],
        default="gymnasium",
        help="our side's backend: the preset's Gymnasium host loop, or gymnax's CartPole-v1 "
        "(the same dynamics) in one compiled program",
    )
    p.add_argument(
        "--cleanrl-host-tuning",
        action="store_true",
        help="also give CleanRL dqn-jax's host-loop JAX/XLA settings",
    )
    args = p.parse_args()
    preset, name = ALGOS[args.algo]
    script = args.cleanrl_dir.resolve() / name
    if not script.exists():
        raise SystemExit(f"error: no {name} in {args.cleanrl_dir}")
    if args.total_steps is not None and (args.total_steps < 10 or args.total_steps % 10):
        raise SystemExit("error: --total-steps must be a positive multiple of 10 (train every 10)")
    steps = args.total_steps or PRESET_STEPS

    from common import header

    print(header(f"dqn-jax {preset} vs CleanRL {name}, {steps:,} env steps, whole processes"))
    print(f"CleanRL: {script} (git blob {git_blob_id(script)[:12]})")
    print(f"CleanRL venv: {args.cleanrl_python}: {cleanrl_versions(args.cleanrl_python)}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (the machine may be shared)\n")

    env = dict(os.environ)
    cleanrl_env = dict(env)
    if args.cleanrl_host_tuning and "xla_cpu_enable_concurrency_optimized_scheduler" not in env.get(
        "XLA_FLAGS", ""
    ):
        cleanrl_env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {HOST_LOOP_XLA_FLAG}".strip()

    rows, ratios, commands = [], [], {}
    with tempfile.TemporaryDirectory(prefix="cleanrl_") as tmp:
        tmp = Path(tmp)
        for r in range(1, args.repeats + 1):
            run_dir = tmp / f"ours-{r}"
            cmd = dqn_jax_command(preset, run_dir, args.total_steps, args.ours_backend)
            commands["ours"] = cmd
            wall_ours, _ = timed(cmd, Path.cwd(), env)
            rows.append({"repeat": r, **ours_row(run_dir, wall_ours, steps)})
            print(md_table(rows[-1:], list(rows[-1])), flush=True)

            work = tmp / f"cleanrl-{r}"
            work.mkdir()
            tune = args.cleanrl_host_tuning
            cmd = cleanrl_command(args.cleanrl_python, script, args.total_steps, tune)
            commands["CleanRL"] = cmd
            wall_cleanrl, stdout = timed(cmd, work, cleanrl_env)
            ratio = wall_ours / wall_cleanrl
            ratios.append(ratio)
            row = {"repeat": r, **cleanrl_row(stdout, wall_cleanrl, steps)}
            rows.append({**row, "ours/CleanRL wall": f"{ratio:.2f}"})
            print(md_table(rows[-1:], list(rows[-1])), flush=True)

    columns = ["repeat", "side", "wall s", "steps/s", "in-loop steps/s", "compile s"]
    columns += ["greedy return"]
    columns += ["last-10 return", "episodes", "ours/CleanRL wall"]
    print(f"\nall runs (load average at end: {os.getloadavg()[0]:.2f}):\n")
    print(md_table(rows, columns))
    if len(ratios) > 1:
        median = statistics.median(ratios)
        print(f"\nours/CleanRL wall, median of {len(ratios)} repeats: {median:.2f}")
    print("\ncommands (TMP: a temporary directory, removed at the end):")
    shown = {"ours": commands["ours"], "CleanRL": commands["CleanRL"][:2] + ["LAUNCHER"]}
    shown["CleanRL"] += commands["CleanRL"][3:]
    for side, cmd in shown.items():
        text = shlex.join(cmd).replace(str(tmp), "TMP")
        print(f"  {side}: {text}")
    env_note = "same environment as ours"
    if args.cleanrl_host_tuning:
        env_note += f", plus XLA_FLAGS={cleanrl_env.get('XLA_FLAGS', '')!r} and no async dispatch"
    print(f"  CleanRL cwd: TMP/cleanrl-R; {env_note}; LAUNCHER = this file's LAUNCHER string")


if __name__ == "__main__":
    main()
