"""The host side of a run: compile, run the chunks, report between them, write the run directory.

``train(config, run_dir)`` is what the CLI calls. All seeds run in one compiled program:
``jit(vmap(run_chunk))`` with the seed axis first and the train state donated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dqn_jax import report
from dqn_jax.config import Config
from dqn_jax.loop import Trainer, TrainState, make_train


class NonFiniteError(RuntimeError):
    """Raised when a loss or the parameters of some seed stop being finite."""


class RunResult(NamedTuple):
    state: TrainState  # final train state (leading seed axis)
    episodes: list[np.ndarray]  # per seed: [n, 3] (env_step, length, return)
    eval_returns: np.ndarray  # f32[num_seeds, eval_episodes] at the end
    summary: dict


def seed_keys(config: Config) -> jax.Array:
    """One PRNG key per run: run ``i`` uses ``PRNGKey(seed + i)``, whatever ``num_seeds`` is."""
    seeds = jnp.arange(config.seed, config.seed + config.num_seeds, dtype=jnp.uint32)
    return jax.vmap(jax.random.PRNGKey)(seeds)


def eval_keys(config: Config) -> jax.Array:
    """Evaluation keys, independent of the training keys (evaluating never changes training)."""
    return jax.vmap(lambda k: jax.random.fold_in(k, 0x5EED))(seed_keys(config))


def chunk_sizes(num_iterations: int, num_chunks: int) -> list[int]:
    """Split iterations into ``num_chunks`` chunks of at most two distinct sizes (two compiles)."""
    base, extra = divmod(num_iterations, num_chunks)
    return [base + 1] * extra + [base] * (num_chunks - extra)


def nonfinite_seeds(state: TrainState, loss: np.ndarray) -> list[int]:
    """Seeds whose loss in this chunk or whose current parameters contain NaN/inf."""
    leaves = jax.tree.leaves(state.learner.params)
    params_ok = np.asarray(
        jnp.stack([jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1) for x in leaves]).all(0)
    )
    loss_ok = np.isfinite(loss.reshape(loss.shape[0], -1)).all(axis=1)
    return [int(s) for s in np.nonzero(~(params_ok & loss_ok))[0]]


class Compiled(NamedTuple):
    init: Callable
    prefill: Callable | None
    chunks: dict[int, Callable]
    evaluate: Callable | None
    seconds: float
    sharding: NamedSharding  # of every array with a leading seed axis


def seed_sharding(num_seeds: int, devices: list | None = None) -> NamedSharding:
    """Shard the leading seed axis over the most devices that divide ``num_seeds`` evenly.

    One CPU, N CPU devices (``--xla_force_host_platform_device_count``) or several GPUs: the same
    program, each device running its share of the seeds; seeds never communicate.
    """
    devices = list(devices or jax.devices())
    n = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
    return NamedSharding(Mesh(np.array(devices[:n]), ("seed",)), PartitionSpec("seed"))


def per_device(fn: Callable, shard: NamedSharding, num_args: int, replicated_args=()) -> Callable:
    """``fn`` (vmapped over seeds) run by each device on its own seeds with ``shard_map``.

    Each device runs exactly the single-device program on its share of the seeds, so a sharded
    run is bit-identical to the unsharded one (GSPMD's automatic partitioning of the same
    program was measured here to change float rounding).
    """
    specs = tuple(
        PartitionSpec() if i in replicated_args else PartitionSpec("seed") for i in range(num_args)
    )
    return jax.shard_map(
        fn, mesh=shard.mesh, in_specs=specs, out_specs=PartitionSpec("seed"), check_vma=False
    )


def compile_all(trainer: Trainer, sizes: list[int], devices: list | None = None) -> Compiled:
    """AOT-compile every program of the run with the seed axis sharded over ``devices``
    (default: all), timed so that compile and run time are reported apart."""
    config = trainer.config
    shard = seed_sharding(config.num_seeds, devices)
    keys = jax.device_put(seed_keys(config), shard)
    start = time.perf_counter()
    init = jax.jit(per_device(jax.vmap(trainer.init), shard, 1)).lower(keys).compile()
    state_shape = jax.eval_shape(jax.vmap(trainer.init), keys)
    state_shape = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=shard), state_shape
    )
    prefill = None
    if config.prefill_episodes > 0 and config.variant != "random":
        prefill = jax.jit(per_device(jax.vmap(trainer.prefill), shard, 1), donate_argnums=0)
        prefill = prefill.lower(state_shape).compile()
    chunks = {}
    for n in sorted(set(sizes)):
        chunk = jax.vmap(lambda s, it, n=n: trainer.run_chunk(s, it, n), in_axes=(0, None))
        fn = jax.jit(per_device(chunk, shard, 2, replicated_args=(1,)), donate_argnums=0)
        chunks[n] = fn.lower(state_shape, jnp.int32(0)).compile()
    evaluate = None
    if config.eval_episodes > 0:
        params_shape = state_shape.learner.params
        evaluate = jax.jit(per_device(jax.vmap(trainer.evaluate), shard, 2))
        evaluate = evaluate.lower(params_shape, keys).compile()
    return Compiled(init, prefill, chunks, evaluate, time.perf_counter() - start, shard)


def train(
    config: Config,
    run_dir: str | Path | None = None,
    *,
    trainer: Trainer | None = None,
    progress: bool = True,
    echo: Callable[[str], Any] = print,
    devices: list | None = None,
) -> RunResult:
    """Run ``config`` (all seeds at once); write the run directory if ``run_dir`` is given.

    Files: ``config.json``, ``episodes.csv``, ``evals.csv``, ``summary.json``, ``episodes.png``.
    Raises :class:`NonFiniteError` at the first chunk boundary where a seed's loss or
    parameters are NaN/inf. ``devices`` (default: all of JAX's) share the seeds.
    """
    trainer = trainer or make_train(config)
    out = Path(run_dir) if run_dir is not None else None
    if out is not None:
        report.check_writable(out)
        report.write_json(out / "config.json", config.to_dict())
    sizes = chunk_sizes(config.num_iterations, config.num_chunks)
    compiled = compile_all(trainer, sizes, devices)
    echo(
        f"{config.env} | {config.variant} | {config.num_seeds} seed(s) x "
        f"{config.total_steps:,} env steps | {compiled.sharding.mesh.size} device(s) | "
        f"compiled in {compiled.seconds:.1f}s"
    )

    run_start = time.perf_counter()
    state = compiled.init(jax.device_put(seed_keys(config), compiled.sharding))
    if compiled.prefill is not None:
        state = compiled.prefill(state)
    log = report.EpisodeLog(out / "episodes.csv" if out else None, config.num_seeds)
    evals: list[tuple[int, np.ndarray]] = []
    bar = _progress_bar(config.total_steps, progress)
    iteration = 0
    for chunk, n in enumerate(sizes, start=1):
        chunk_start = time.perf_counter()
        state, outputs = compiled.chunks[n](state, jnp.int32(iteration))
        outputs = jax.device_get(outputs)
        first_vstep = iteration * config.vector_steps_per_iteration
        iteration += n
        env_step = iteration * config.env_steps_per_iteration
        bad = nonfinite_seeds(state, outputs.loss)
        if bad:
            raise NonFiniteError(
                f"non-finite loss or parameters at chunk {chunk} (env steps "
                f"{first_vstep * config.num_envs:,}-{env_step:,}) in seed(s) "
                f"{', '.join(str(config.seed + s) for s in bad)} (run index {bad})"
            )
        window = report.extract_episodes(
            outputs.ep_length, outputs.ep_return, first_vstep, config.num_envs
        )
        log.append(window)
        periodic = config.eval_every_chunks and chunk % config.eval_every_chunks == 0
        if compiled.evaluate and periodic and chunk != len(sizes):
            evals.append((env_step, _evaluate(compiled, state, config)))
        line = report.window_line(
            chunk,
            len(sizes),
            env_step,
            window,
            log,
            float(np.mean(outputs.loss[:, -1])),
            time.perf_counter() - chunk_start,
        )
        if evals and evals[-1][0] == env_step:
            line += f" | eval {evals[-1][1].mean():.1f}"
        bar.update(n * config.env_steps_per_iteration)
        bar.write(line) if progress else echo(line)
    bar.close()
    final_eval = _evaluate(compiled, state, config) if compiled.evaluate else np.zeros((0, 0))
    evals.append((iteration * config.env_steps_per_iteration, final_eval))
    jax.block_until_ready(state)
    run_s = time.perf_counter() - run_start

    episodes = [log.seed_array(s) for s in range(config.num_seeds)]
    summary = _summary(config, compiled, run_s, episodes, final_eval)
    if out is not None:
        _write_evals(out / "evals.csv", evals, config)
        report.write_json(out / "summary.json", summary)
        from dqn_jax.plots import plot_episodes

        plot_episodes(episodes, out / "episodes.png", f"{config.env} - {config.variant}")
    echo(_final_line(summary))
    return RunResult(state, episodes, final_eval, summary)


def _evaluate(compiled: Compiled, state: TrainState, config: Config) -> np.ndarray:
    keys = jax.device_put(eval_keys(config), compiled.sharding)
    returns = compiled.evaluate(state.learner.params, keys)
    return np.asarray(jax.device_get(returns))


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", unit_scale=True, disable=not enabled, leave=False)


def _write_evals(path: Path, evals: list[tuple[int, np.ndarray]], config: Config) -> None:
    with path.open("w") as f:
        f.write("seed,env_step,mean_return,min_return,max_return\n")
        for env_step, returns in evals:
            for s in range(returns.shape[0]):
                r = returns[s]
                f.write(f"{s},{env_step},{r.mean():g},{r.min():g},{r.max():g}\n")


def _summary(config, compiled: Compiled, run_s, episodes, final_eval) -> dict:
    compile_s = compiled.seconds
    devices = compiled.sharding.mesh.devices.flat
    total = config.total_steps * config.num_seeds
    last100 = [float(e[-100:, 2].mean()) if len(e) else None for e in episodes]
    eval_means = [float(x) for x in final_eval.mean(axis=1)] if final_eval.size else []
    return {
        "env": config.env,
        "variant": config.variant,
        "num_seeds": config.num_seeds,
        "seeds": list(range(config.seed, config.seed + config.num_seeds)),
        "total_env_steps": total,
        "env_steps_per_seed": config.total_steps,
        "compile_s": round(compile_s, 3),
        "run_s": round(run_s, 3),
        "env_steps_per_s": round(total / run_s, 1),
        "episodes_per_seed": [len(e) for e in episodes],
        "last100_return_per_seed": last100,
        "eval_episodes": config.eval_episodes,
        "final_eval_return_per_seed": eval_means,
        "final_eval_return_mean": float(np.mean(eval_means)) if eval_means else None,
        "devices": [str(d) for d in devices],
        "jax_version": jax.__version__,
    }


def _final_line(summary: dict) -> str:
    evals = summary["final_eval_return_per_seed"]
    ev = ", ".join(f"{x:.1f}" for x in evals) if evals else "none"
    return (
        f"done: {summary['total_env_steps']:,} env steps in {summary['run_s']:.1f}s "
        f"({summary['env_steps_per_s']:,.0f} steps/s) + {summary['compile_s']:.1f}s compile | "
        f"final greedy eval per seed: {ev}"
    )
