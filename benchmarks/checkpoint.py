"""Checkpoint save and restore times: the default CartPole run (buffer 100,000) and a
1,000,000-transition buffer, through ``dqn_jax.checkpoint`` (what ``train`` and ``--resume`` use).

    python benchmarks/checkpoint.py [--seeds 1 8] [--repeats 3]

The train state comes from the run's own ``init`` with the replay filled with random data (a
full buffer, nothing for a compressor to exploit). Times are medians over ``--repeats`` saves
(each a new step, synchronous, atomic) and restores of the latest, onto the run's shardings.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def filled_state(config):
    """The run's initial train state (seed-sharded) with random replay contents."""
    import jax

    from dqn_jax.device_loop import make_train
    from dqn_jax.run import seed_keys, seed_sharding

    shard = seed_sharding(config.num_seeds)
    state = jax.jit(jax.vmap(make_train(config).init), out_shardings=shard)(seed_keys(config))
    leaves, treedef = jax.tree.flatten(state.agent.replay)
    keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
    noisy = [
        jax.random.uniform(k, x.shape, minval=0, maxval=2).astype(x.dtype)
        for k, x in zip(keys, leaves, strict=True)
    ]
    replay = jax.device_put(jax.tree.unflatten(treedef, noisy), shard)
    return state._replace(agent=state.agent._replace(replay=replay)), shard


def measure(name: str, config, repeats: int) -> dict:
    """Median save and restore seconds of ``config``'s train state."""
    import jax

    from dqn_jax import checkpoint as ckpt

    state, shard = filled_state(config)
    jax.block_until_ready(state)
    target = ckpt.abstract_state(jax.eval_shape(lambda: state), shard)
    saves, restores = [], []
    with tempfile.TemporaryDirectory(dir=".") as run_dir:
        manager = ckpt.open_manager(run_dir, keep=2)
        for step in range(1, repeats + 1):
            start = time.perf_counter()
            ckpt.save(manager, step, state, {"step": step})
            saves.append(time.perf_counter() - start)
        for _ in range(repeats):
            start = time.perf_counter()
            restored = ckpt.restore(run_dir, target)
            jax.block_until_ready(restored.state)
            restores.append(time.perf_counter() - start)
        on_disk = sum(
            p.stat().st_size for p in (Path(run_dir) / "checkpoints" / str(repeats)).rglob("*")
        )
    size = ckpt.estimate_bytes(target)
    save_s, restore_s = statistics.median(saves), statistics.median(restores)
    return {
        "run": name,
        "seeds": config.num_seeds,
        "buffer/seed": f"{config.buffer_size:,}",
        "state MiB": f"{size / 2**20:.1f}",
        "on disk MiB": f"{on_disk / 2**20:.1f}",
        "save s": f"{save_s:.3f}",
        "restore s": f"{restore_s:.3f}",
        "save MiB/s": f"{size / 2**20 / save_s:.0f}",
        "restore MiB/s": f"{size / 2**20 / restore_s:.0f}",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from common import header, table

    from dqn_jax.config import from_preset

    print(header("Checkpoint save / restore (dqn_jax.checkpoint, orbax, synchronous)"))
    rows = []
    for seeds in args.seeds:
        default = from_preset("default", num_seeds=seeds)
        rows.append(measure("default CartPole", default, args.repeats))
        big = default.replace(buffer_size=1_000_000)
        rows.append(measure("1M buffer", big, args.repeats))
    columns = list(rows[0])
    print(table(rows, columns))


if __name__ == "__main__":
    main()
