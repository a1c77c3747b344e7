"""Throughput of the gymnasium backend on the ``cleanrl-cartpole`` preset (CleanRL dqn_jax.py's
default work: Gymnasium CartPole-v1 on the host, 500,000 env steps, 1 env, an update every 10
steps), next to a CleanRL-style host loop measured on the same machine in the same session.

    python benchmarks/gymnasium_throughput.py [--total-steps N] [--baseline-steps M]
                                              [--async-dispatch]

Rows:

- ``dqn-jax gymnasium``: ``dqn_jax.host_loop.train`` on the preset; at most one jitted call per env
  step (summary's ``dispatches_per_vector_step``).
- ``CleanRL-style loop``: the structure of CleanRL's dqn_jax.py, written here from its
  description (not its code): a jitted Q forward per step, a host (numpy) replay buffer, a
  jitted update on a host-sampled batch every 10 steps, a target copy every 500. Same network,
  optimizer and schedule; run for ``--baseline-steps`` (learning from 10,000) to give a
  same-conditions steps/s on a shared machine.
- ``CleanRL dqn_jax.py (issue)``: the issue's figures for CleanRL on this machine (105 s for
  500,000 steps, ~5,000 steps/s, return 500), not measured here.

Each measured row runs in its own process. By default both children get the settings that
``dqn-jax train`` gives the gymnasium backend, before JAX starts: ``jax_cpu_enable_async_dispatch``
off (a small program runs on the calling thread: measured ~1.3x faster for this loop) and
``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false`` (see
``dqn_jax.cli.tune_for_host_loop``); ``--async-dispatch`` keeps JAX's defaults for both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PRESET = "cleanrl-cartpole"


def backend_row(total_steps: int | None) -> dict:
    """Run the preset with the gymnasium backend in this process and return its row."""
    from dqn_jax.config import from_preset
    from dqn_jax.host_loop import train

    overrides = {"total_steps": total_steps} if total_steps else {}
    config = from_preset(PRESET, **overrides)
    s = train(config, None, progress=False, echo=lambda _: None).summary
    return {
        "run": "dqn-jax gymnasium",
        "env steps": f"{config.total_steps:,}",
        "compile s": f"{s['compile_s']:.1f}",
        "wall s": f"{s['run_s']:.1f}",
        "steps/s": f"{s['env_steps_per_s']:,.0f}",
        "dispatches/step": f"{s['dispatches_per_vector_step']:.2f}",
        "final eval return": f"{s['final_eval_return_mean']:.1f}",
    }


def baseline_row(total_steps: int) -> dict:
    """A CleanRL-style host loop (see the module docstring) for ``total_steps``; its row."""
    import gymnasium as gym
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from dqn_jax.config import from_preset
    from dqn_jax.networks import MLPQNetwork

    c = from_preset(PRESET)
    env = gym.make(c.env)
    net = MLPQNetwork(2, c.hidden_sizes)
    params = net.init(jax.random.PRNGKey(c.seed), np.zeros((1, 4), np.float32))
    target, opt = params, optax.adam(c.lr)
    opt_state = opt.init(params)

    @jax.jit
    def q_values(p, obs):
        return net.apply(p, obs)

    @jax.jit
    def update(p, tgt, opt_state, obs, act, rew, nxt, term):
        def loss(p):
            q = jnp.take_along_axis(net.apply(p, obs), act[:, None], 1)[:, 0]
            y = rew + c.gamma * (1.0 - term) * net.apply(tgt, nxt).max(-1)
            return jnp.mean((jax.lax.stop_gradient(y) - q) ** 2)

        grads = jax.grad(loss)(p)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(p, updates), opt_state

    cap, rng = c.buffer_size, np.random.default_rng(c.seed)
    buf_obs, buf_nxt = np.zeros((cap, 4), np.float32), np.zeros((cap, 4), np.float32)
    buf_act, buf_rew, buf_term = np.zeros(cap, np.int32), np.zeros(cap), np.zeros(cap)
    obs, _ = env.reset(seed=c.seed)
    compile_start = time.perf_counter()
    q_values(params, obs[None])
    batch = (buf_obs[:128], buf_act[:128], buf_rew[:128], buf_nxt[:128], buf_term[:128])
    jax.block_until_ready(update(params, target, opt_state, *batch))
    compile_s = time.perf_counter() - compile_start
    start = time.perf_counter()
    for step in range(total_steps):
        eps = max(c.eps_end, c.eps_start + (c.eps_end - c.eps_start) * step / c.eps_duration)
        if rng.random() < eps:
            action = int(rng.integers(2))
        else:
            action = int(np.argmax(np.asarray(q_values(params, obs[None]))[0]))
        nxt, rew, term, trunc, _ = env.step(action)
        i = step % cap
        buf_obs[i], buf_act[i], buf_rew[i], buf_nxt[i], buf_term[i] = obs, action, rew, nxt, term
        obs = env.reset()[0] if term or trunc else nxt
        if step >= c.learning_starts and step % c.train_every == 0:
            idx = rng.integers(0, min(step + 1, cap), c.batch_size)
            batch = (buf_obs[idx], buf_act[idx], buf_rew[idx], buf_nxt[idx], buf_term[idx])
            params, opt_state = update(params, target, opt_state, *batch)
            if step % c.target_period == 0:
                target = params
    jax.block_until_ready(params)
    wall = time.perf_counter() - start
    return {
        "run": "CleanRL-style loop",
        "env steps": f"{total_steps:,}",
        "compile s": f"{compile_s:.1f}",
        "wall s": f"{wall:.1f}",
        "steps/s": f"{total_steps / wall:,.0f}",
        "dispatches/step": "1 (+0.1 update)",
        "final eval return": "-",
    }


def child(kind: str, steps: int | None, async_dispatch: bool) -> dict:
    """Set JAX up as requested, before it starts, then run one row."""
    if not async_dispatch:  # the CLI's settings for the gymnasium backend, in both rows
        from dqn_jax.cli import tune_for_host_loop

        tune_for_host_loop(["--preset", PRESET])
    import jax

    if not async_dispatch:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    return backend_row(steps) if kind == "backend" else baseline_row(steps or 500_000)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--total-steps", type=int, default=None, help="override the preset's")
    p.add_argument("--baseline-steps", type=int, default=500_000, help="0 = skip the baseline")
    p.add_argument("--async-dispatch", action="store_true", help="keep JAX's CPU async dispatch")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        steps = args.baseline_steps if args.child == "baseline" else args.total_steps
        print(json.dumps(child(args.child, steps, args.async_dispatch)))
        return

    from common import header, table

    print(header(f"dqn-jax gymnasium backend throughput, preset {PRESET}"))
    print(f"load average at start: {os.getloadavg()[0]:.2f} (the machine is shared)")
    rows = []
    kinds = ["backend"] + (["baseline"] if args.baseline_steps else [])
    for kind in kinds:
        cmd = [sys.executable, __file__, "--child", kind]
        cmd += ["--baseline-steps", str(args.baseline_steps)]
        if args.total_steps:
            cmd += ["--total-steps", str(args.total_steps)]
        if args.async_dispatch:
            cmd.append("--async-dispatch")
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        if out.returncode:
            raise SystemExit(f"child failed:\n{out.stderr}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(table(rows[-1:], list(rows[-1])), flush=True)
    rows.append(
        {
            "run": "CleanRL dqn_jax.py (issue)",
            "env steps": "500,000",
            "compile s": "-",
            "wall s": "105",
            "steps/s": "~5,000",
            "dispatches/step": "-",
            "final eval return": "500",
        }
    )
    print(f"\nall rows (load average at end: {os.getloadavg()[0]:.2f}):")
    print(table(rows, list(rows[0])))
    measured = {r["run"]: float(r["steps/s"].replace(",", "")) for r in rows[:-1]}
    if len(measured) == 2:
        ratio = measured["dqn-jax gymnasium"] / measured["CleanRL-style loop"]
        print(f"\nspeedup over the CleanRL-style loop, same session: {ratio:.2f}x")
    print(
        f"speedup over the issue's CleanRL figure (4,762 steps/s): "
        f"{measured['dqn-jax gymnasium'] / 4762:.2f}x"
    )


if __name__ == "__main__":
    main()
