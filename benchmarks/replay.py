"""Replay throughput: microseconds per (sample a batch + update its priorities).

Compares :func:`dqn_jax.per.prioritized_replay` with flashbax's prioritised flat buffer
(``flashbax.make_prioritised_flat_buffer``, optional: ``pip install "flashbax==0.1.3"``) on the
same transitions (CartPole-sized: 4 floats per observation), both full, in two settings:

- ``call``: one jitted call per step with the state donated (the Gymnasium host loop);
- ``call floor``: the same call doing nothing useful (it only increments the buffer's write
  index), on the same state: the per-call dispatch and donation cost each side pays whatever
  the step does, so ``call`` minus ``call floor`` is roughly the work itself;
- ``scan``: ``lax.scan`` over ``--scan-steps`` steps inside one jitted call (the JAX loop);
- ``scan, vmap S seeds``: the same with ``S`` independent buffers under ``jax.vmap`` (the
  figure is per step of all ``S`` buffers together).

Both are jitted, warmed up, synchronised with ``block_until_ready``; each figure is the median
over ``--repeats`` repeats, and the two sides' repeats alternate (one of each per round), so a
change in the load of a shared machine hits both alike. The train-step table compares a full
loop iteration with uniform and with prioritized replay the same way. Prints tables; asserts
nothing.

    python benchmarks/replay.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import jax
import jax.numpy as jnp

from dqn_jax import per

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import alternate_us, header  # noqa: E402

from dqn_jax.replay import Transition

try:
    import flashbax
except ImportError:  # optional: the table says so
    flashbax = None

OBS_DIM = 4
BETA = 0.4

Step = Callable[[Any, jax.Array], Any]


def transitions(n: int, key: jax.Array) -> Transition:
    """``n`` random CartPole-sized transitions."""
    k_obs, k_rew = jax.random.split(key)
    obs = jax.random.normal(k_obs, (n, OBS_DIM), jnp.float32)
    return Transition(
        obs=obs,
        action=jnp.zeros((n,), jnp.int32),
        reward=jax.random.uniform(k_rew, (n,), jnp.float32),
        discount=jnp.full((n,), 0.99, jnp.float32),
        next_obs=obs + 1.0,
        last=jnp.zeros((n,), jnp.float32),
    )


def ours(capacity: int, batch: int) -> tuple[Step, Any]:
    """Step function and a full state for :func:`dqn_jax.per.prioritized_replay`."""
    buffer = per.prioritized_replay(capacity, batch)
    data = transitions(capacity, jax.random.key(1))
    state = jax.jit(buffer.add)(buffer.init(jax.tree.map(lambda x: x[0], data)), data, None)

    def step(state, key):
        indices, batch_, weights = buffer.sample(state, key, BETA)
        abs_td = jnp.abs(batch_.reward - batch_.obs[:, 0]) * weights
        return buffer.update(state, indices, abs_td)

    return step, state


def theirs(capacity: int, batch: int) -> tuple[Step, Any]:
    """Step function and a full state for flashbax's prioritised flat buffer."""
    buffer = flashbax.make_prioritised_flat_buffer(
        max_length=capacity, min_length=batch, sample_batch_size=batch, add_sequences=True
    )
    data = transitions(capacity, jax.random.key(1))
    experience = {"obs": data.obs, "action": data.action, "reward": data.reward}
    first = jax.tree.map(lambda x: x[0], experience)
    state = jax.jit(buffer.add)(buffer.init(first), experience)

    def step(state, key):
        sample = buffer.sample(state, key)
        first = sample.experience.first
        abs_td = jnp.abs(first["reward"] - first["obs"][:, 0]) * sample.probabilities
        return buffer.set_priorities(state, sample.indices, abs_td)

    return step, state


def trivial_step(name: str) -> Step:
    """A step that only increments the write index of ``name``'s state (the ``call floor``)."""
    if name == "flashbax":
        return lambda state, key: state.replace(current_index=state.current_index + 1)
    return lambda state, key: state._replace(ptr=state.ptr + 1)


Timer = Callable[[], float]  # runs one repeat, returns seconds per step


def call_timer(step: Step, state: Any, keys: jax.Array) -> Timer:
    """Compiled, warmed-up timer: one repeat = one donated jitted call per key, mean per call."""
    call = jax.jit(step, donate_argnums=0)
    for key in keys[:3]:  # compile and warm up
        state = call(state, key)
    jax.block_until_ready(state)

    def repeat() -> float:
        nonlocal state
        start = time.perf_counter()
        for key in keys:
            state = call(state, key)
        jax.block_until_ready(state)
        return (time.perf_counter() - start) / len(keys)

    return repeat


def scan_timer(step: Step, state: Any, keys: jax.Array) -> Timer:
    """Compiled, warmed-up timer: one repeat = one ``lax.scan`` over ``keys``, per step."""

    def run(state, keys):
        return jax.lax.scan(lambda s, k: (step(s, k), None), state, keys)[0]

    run = jax.jit(run, donate_argnums=0)
    state = run(state, keys)  # compile and warm up
    jax.block_until_ready(state)

    def repeat() -> float:
        nonlocal state
        start = time.perf_counter()
        state = run(state, keys)
        jax.block_until_ready(state)
        return (time.perf_counter() - start) / len(keys)

    return repeat


def setting_timers(
    setting: str,
    setups: dict[str, Callable[[int, int], tuple[Step, Any]]],
    capacity: int,
    batch: int,
    keys: jax.Array,
    seed_keys: jax.Array,
) -> dict[str, Timer]:
    """A fresh full state and a compiled, warmed-up timer per side for ``setting``."""
    timers = {}
    for name, setup in setups.items():
        step, state = setup(capacity, batch)
        if setting == "call":
            timers[name] = call_timer(step, state, keys)
        elif setting == "call floor":
            timers[name] = call_timer(trivial_step(name), state, keys)
        elif setting == "scan":
            timers[name] = scan_timer(step, state, keys[: seed_keys.shape[0]])
        else:  # vmapped over seeds
            states = jax.tree.map(lambda x: jnp.stack([x] * seed_keys.shape[1]), state)
            timers[name] = scan_timer(jax.vmap(step), states, seed_keys)
        del state
    return timers


def replay_rows(args: argparse.Namespace) -> list[dict]:
    """One row per (capacity, batch, setting): dqn_jax and flashbax microseconds and ratio."""
    rows = []
    for capacity in args.capacities:
        for batch in args.batches:
            keys = jax.random.split(jax.random.key(0), args.calls)
            setups = {"dqn_jax": ours}
            if flashbax is not None:
                setups["flashbax"] = theirs
            seeded = f"scan, vmap {args.seeds} seeds"
            seed_keys = jax.random.split(jax.random.key(1), (args.scan_steps, args.seeds))
            settings = ("call", "call floor", "scan") + ((seeded,) if args.seeds > 1 else ())
            for setting in settings:
                timers = setting_timers(setting, setups, capacity, batch, keys, seed_keys)
                timed = alternate_us(timers, args.repeats)
                mine = timed["dqn_jax"]
                other = timed.get("flashbax")
                rows.append(
                    {
                        "capacity": capacity,
                        "batch": batch,
                        "setting": setting,
                        "dqn_jax_us": f"{mine:.1f}",
                        "flashbax_us": f"{other:.1f}" if other else "flashbax not installed",
                        "speedup": f"{other / mine:.1f}x" if other else "-",
                    }
                )
    return rows


def loop_iteration_us(
    variants: tuple[str, ...], seeds: int, iterations: int, repeats: int
) -> dict[str, float]:
    """Median microseconds per loop iteration of the ``default`` preset (CartPole-v1: 4 env
    steps, 2 gradient updates, target schedule) for each of ``variants``, all ``seeds`` vmapped.

    All variants are compiled and warmed up first, then their repeats alternate (one chunk of
    each per round), so a change in the machine's load hits every variant alike and their ratio
    stays meaningful on a shared machine.
    """
    from dqn_jax.config import from_preset
    from dqn_jax.device_loop import make_train
    from dqn_jax.run import seed_keys

    runs = {}
    for variant in variants:
        config = from_preset("default", variant=variant, num_seeds=seeds)
        trainer = make_train(config)
        state = jax.jit(jax.vmap(trainer.init))(seed_keys(config))
        chunk = jax.jit(
            jax.vmap(
                lambda s, it, trainer=trainer: trainer.run_chunk(s, it, iterations),
                in_axes=(0, None),
            ),
            donate_argnums=0,
        )
        start = jnp.int32(config.learning_starts // config.env_steps_per_iteration + 1)
        state, _ = chunk(state, start)  # compile, and fill the buffer past learning_starts
        runs[variant] = [chunk, state, start, []]
    for _ in range(repeats):
        for run in runs.values():
            chunk, state, start, times = run
            begin = time.perf_counter()
            run[1], out = chunk(state, start)
            jax.block_until_ready(out)
            times.append(time.perf_counter() - begin)
    return {v: statistics.median(run[3]) / iterations * 1e6 for v, run in runs.items()}


def train_step_rows(args: argparse.Namespace) -> list[dict]:
    """Full train step (loop iteration) with uniform vs prioritized replay, same everything else."""
    iterations = 500 if args.quick else 2000
    rows = []
    for seeds in sorted({1, args.seeds}):
        timed = loop_iteration_us(("ddqn", "ddqn_per"), seeds, iterations, args.repeats)
        uniform, prioritized = timed["ddqn"], timed["ddqn_per"]
        rows.append(
            {
                "preset": "default (CartPole-v1)",
                "seeds": seeds,
                "ddqn_us": f"{uniform:.1f}",
                "ddqn_per_us": f"{prioritized:.1f}",
                "ratio": f"{prioritized / uniform:.2f}x",
            }
        )
    return rows


def print_table(title: str, rows: list[dict]) -> None:
    """Print ``rows`` (dicts with the same keys) as an aligned text table."""
    if not rows:
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print(f"\n{title}")
    print("  ".join(c.rjust(widths[c]) for c in cols))
    for row in rows:
        print("  ".join(str(row[c]).rjust(widths[c]) for c in cols))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and calls")
    parser.add_argument("--capacities", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=7, help="repeats per figure (median)")
    parser.add_argument("--calls", type=int, default=200, help="calls per repeat (call setting)")
    parser.add_argument("--scan-steps", type=int, default=200, help="steps per scan")
    parser.add_argument(
        "--seeds", type=int, default=8, help="buffers vmapped in the last setting (1: skip it)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.calls, args.scan_steps = 3, 50, 50
    args.scan_steps = min(args.scan_steps, args.calls)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(header("Replay: sum tree vs flashbax; train step uniform vs prioritized"))
    print(f"flashbax: {version('flashbax') if flashbax else 'not installed'}")
    print(f"settings: repeats={args.repeats} calls={args.calls} scan_steps={args.scan_steps}")
    print_table("sample + update priorities, microseconds per step (median)", replay_rows(args))
    print_table("train step, uniform vs prioritized", train_step_rows(args))


if __name__ == "__main__":
    main()
