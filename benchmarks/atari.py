"""The Atari learning step against a bare update of the same network, in one process.

Rows, all measured in this run:

- ``matmul 2048``: a jitted 2048 x 2048 f32 matrix product, the machine's reference FLOP rate.
- ``bare update``: a plain jitted update written here in a few lines on ``lax`` convolutions
  (no project code): the Nature CNN (Mnih et al., 2015) on a batch of ``uint8[32, 4, 84, 84]``,
  the preset's target (Q-learning or Double Q), Huber loss, Nature's centered RMSProp; in the
  NHWC and NCHW layouts and in f32 and bf16, so the network's layout and dtype are chosen by
  measurement. GFLOP/s from XLA's cost analysis of the compiled program.
- ``update program``: the host driver's iteration-end program that learns (store the
  iteration's 4 steps in the frame replay, sample, one update), called as the driver calls it.
- ``ALE/Pong-v5, no learning`` / ``learning``: agent steps/s of a real ``host_loop.train`` run of
  the ``nature-dqn`` preset, per chunk from ``metrics.jsonl`` (compilation excluded), before and
  after ``learning_starts``; epsilon is held at 0.1, so 9 steps in 10 act greedily as a trained
  agent does. ``learning iteration`` = ``train_every`` agent steps at the learning rate; its ratio
  to the bare update is the issue's target (at most 1.5). The run uses the config's
  ``atari_envs`` (ale-py's C++ vector env by default).
- ``env alone``: the host vector env of ALE/Pong-v5 stepped with random actions, nothing else:
  ale-py's ``AtariVectorEnv`` (``atari_envs=ale``) against the Gymnasium wrappers stepped in
  turn (``atari_envs=gymnasium``), with 1 and 8 environments.

    python benchmarks/atari.py [--variant dqn|ddqn] [--steps 1000] [--repeats 15]

Needs the ``atari`` extra. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import header, table  # noqa: E402

BATCH, ACTIONS, STACK = 32, 6, 4
CONVS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))  # features, size, stride


def median_ms(fn, repeats: int) -> float:
    """Median wall milliseconds of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def flops(compiled) -> float:
    """FLOPs of one call of a compiled program, from XLA's cost analysis."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def matmul_row(repeats: int) -> dict:
    a = jnp.ones((2048, 2048), jnp.float32)
    f = jax.jit(lambda x: x @ x).lower(a).compile()
    ms = median_ms(lambda: f(a).block_until_ready(), repeats)
    return dict(what="matmul 2048 f32", ms=f"{ms:.1f}", gflops=f"{2 * 2048**3 / ms / 1e6:.1f}")


def bare_update(layout: str, dtype, double: bool):
    """A plain update step ``(params, opt_state, target, batch) -> (params, opt_state)`` and
    its initial arguments; convolutions in ``layout`` (NHWC or NCHW) computed in ``dtype``."""
    key = jax.random.key(0)
    params, size = [], STACK
    for features, k, _ in CONVS:
        key, sub = jax.random.split(key)
        shape = (k, k, size, features) if layout == "NHWC" else (features, size, k, k)
        params.append((jax.random.normal(sub, shape) * 0.05, jnp.zeros(features)))
        size = features
    for n_in, n_out in ((3136, 512), (512, ACTIONS)):
        key, sub = jax.random.split(key)
        params.append((jax.random.normal(sub, (n_in, n_out)) * 0.02, jnp.zeros(n_out)))
    dims = (layout, "HWIO" if layout == "NHWC" else "OIHW", layout)

    def q(params, obs):
        x = obs.astype(dtype) / 255.0
        if layout == "NHWC":
            x = jnp.transpose(x, (0, 2, 3, 1))
        for (w, b), (_, _, s) in zip(params[:3], CONVS, strict=True):
            x = lax.conv_general_dilated(
                x, w.astype(dtype), (s, s), "VALID", dimension_numbers=dims
            )
            x = jax.nn.relu(x + (b if layout == "NHWC" else b[:, None, None]).astype(dtype))
        x = x.reshape(x.shape[0], -1)
        (w1, b1), (w2, b2) = params[3:]
        x = jax.nn.relu(x @ w1.astype(dtype) + b1.astype(dtype))
        return (x @ w2.astype(dtype) + b2.astype(dtype)).astype(jnp.float32)

    opt = optax.rmsprop(2.5e-4, decay=0.95, eps=0.01, centered=True)

    def loss(params, target, obs, action, reward, discount, next_obs):
        q_next_target = q(target, next_obs)
        if double:
            best = jnp.argmax(q(params, next_obs), -1)
            bootstrap = jnp.take_along_axis(q_next_target, best[:, None], -1)[:, 0]
        else:
            bootstrap = q_next_target.max(-1)
        y = lax.stop_gradient(reward + discount * bootstrap)
        q_sa = jnp.take_along_axis(q(params, obs), action[:, None], -1)[:, 0]
        return optax.huber_loss(q_sa, y).mean()

    def step(params, opt_state, target, batch):
        grads = jax.grad(loss)(params, target, *batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(0)
    frames = lambda: jnp.asarray(rng.integers(0, 256, (BATCH, STACK, 84, 84), np.uint8))  # noqa: E731
    batch = (
        frames(),
        jnp.asarray(rng.integers(0, ACTIONS, BATCH), jnp.int32),
        jnp.asarray(rng.normal(size=BATCH), jnp.float32),
        jnp.full(BATCH, 0.99, jnp.float32),
        frames(),
    )
    return step, (params, opt.init(params), params, batch)


def bare_row(layout: str, dtype, double: bool, repeats: int, matmul_gflops: float) -> dict:
    step, (params, opt_state, target, batch) = bare_update(layout, dtype, double)
    compiled = jax.jit(step).lower(params, opt_state, target, batch).compile()
    box = [params, opt_state]

    def call():
        box[:] = compiled(box[0], box[1], target, batch)
        jax.block_until_ready(box)

    ms = median_ms(call, repeats)
    rate = flops(compiled) / ms / 1e6
    return dict(
        what=f"bare update {layout} {jnp.dtype(dtype).name}",
        ms=f"{ms:.1f}",
        gflops=f"{rate:.1f}",
        of_matmul=f"{rate / matmul_gflops:.2f}",
    )


def update_program_row(config, repeats: int) -> dict:
    """The host driver's learning iteration-end program, called as the driver calls it."""
    from dqn_jax import host_loop as hl

    agent = hl.make_host_agent(config)
    obs = np.random.default_rng(0).integers(0, 256, (1, STACK, 84, 84), np.uint8)
    state, _ = jax.jit(agent.init)(jnp.array([0, 1], jnp.uint32), obs)
    staging = hl.Staging.allocate(config, agent.spec, np.uint8)
    staging.obs[:], staging.next_obs[:] = obs, obs
    store = hl.compiled(agent, hl.StepKind(True, False, False))
    learn = hl.compiled(agent, hl.StepKind(True, True, False))
    box, step = [state], [0]

    def call(program):
        step[0] += config.train_every
        packed = hl.pack(obs, np.array([step[0]], np.int32), *staging)
        box[0], out = program(box[0], packed)
        np.asarray(out)

    for _ in range(64):  # enough stored steps to sample from
        call(store)
    return dict(
        what="update program (store + sample + update)",
        ms=f"{median_ms(lambda: call(learn), repeats):.1f}",
    )


def pong_rates(config, steps: int) -> tuple[float, float]:
    """Agent steps/s of ``host_loop.train`` before and after ``learning_starts`` (= ``steps``)."""
    from dqn_jax import host_loop

    chunk = 250
    config = config.replace(
        total_steps=2 * steps,
        learning_starts=steps,
        num_chunks=2 * steps // chunk,
        eps_start=0.1,
        eps_end=0.1,
        eval_episodes=0,
    )
    with tempfile.TemporaryDirectory() as out:
        host_loop.train(config, Path(out), progress=False, echo=lambda _: None)
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    rate = lambda rs: chunk * len(rs) / sum(r["seconds"] for r in rs)  # noqa: E731
    # The first chunk of each phase pays its programs' first calls: left out.
    return rate(rows[1 : len(rows) // 2]), rate(rows[len(rows) // 2 + 1 :])


def env_rate(atari_envs: str, num_envs: int, steps: int) -> float:
    """Agent steps/s of the host vector env of ALE/Pong-v5 alone (uniform random actions):
    ale-py's C++ ``AtariVectorEnv`` or the Gymnasium wrappers stepped in turn."""
    from dqn_jax.envs import gym_envs

    envs = gym_envs.make_vector_env("ALE/Pong-v5", num_envs, atari_envs=atari_envs)
    rng = np.random.default_rng(0)
    try:
        envs.reset(seed=0)
        start = time.perf_counter()
        for _ in range(steps // num_envs):
            envs.step(rng.integers(0, 6, num_envs))
        return (steps // num_envs) * num_envs / (time.perf_counter() - start)
    finally:
        envs.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=("dqn", "ddqn"), default="dqn", help="preset: dqn")
    p.add_argument("--steps", type=int, default=1000, help="agent steps per phase of the run")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    jax.config.update("jax_cpu_enable_async_dispatch", False)  # as experiments/atari.py
    from dqn_jax.config import from_preset

    config = from_preset("nature-dqn", env="ALE/Pong-v5", variant=args.variant, buffer_size=100_000)
    print(header("Atari learning step against a bare update (batch 32, Nature CNN)"))
    mm = matmul_row(args.repeats)
    rows = [mm]
    for layout, dtype in (("NHWC", jnp.float32), ("NCHW", jnp.float32), ("NHWC", jnp.bfloat16)):
        rows.append(
            bare_row(layout, dtype, args.variant == "ddqn", args.repeats, float(mm["gflops"]))
        )
    bare_ms = float(rows[1]["ms"])
    rows.append(update_program_row(config, args.repeats))
    no_learning, learning = pong_rates(config, args.steps)
    iteration_ms = 1e3 * config.train_every / learning
    rows += [
        dict(
            what="ALE/Pong-v5 agent steps/s, no learning",
            ms=f"{1e3 / no_learning:.1f}",
            steps_per_s=f"{no_learning:.0f}",
        ),
        dict(
            what="ALE/Pong-v5 agent steps/s, learning",
            ms=f"{1e3 / learning:.1f}",
            steps_per_s=f"{learning:.1f}",
        ),
        dict(
            what=f"learning iteration ({config.train_every} agent steps + 1 update)",
            ms=f"{iteration_ms:.1f}",
            vs_bare=f"{iteration_ms / bare_ms:.2f}",
        ),
    ]
    for num_envs in (1, 8):
        for atari_envs in ("ale", "gymnasium"):
            rate = env_rate(atari_envs, num_envs, 8 * args.steps)
            rows.append(
                dict(
                    what=f"ALE/Pong-v5 env alone, {num_envs} env(s), atari_envs={atari_envs}",
                    ms=f"{1e3 / rate:.2f}",
                    steps_per_s=f"{rate:.0f}",
                )
            )
    print(table(rows, ["what", "ms", "gflops", "of_matmul", "steps_per_s", "vs_bare"]))
    print(
        f"\nvariant {args.variant}; ms: per call (median of {args.repeats}) or per agent step; "
        "vs_bare: the learning iteration over the bare NHWC f32 update"
    )


if __name__ == "__main__":
    main()
