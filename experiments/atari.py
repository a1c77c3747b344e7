"""Nature DQN on an Atari game: the ``nature-dqn`` preset (Mnih et al., 2015: Nature CNN,
84x84 grayscale, frame skip 4 with max-pooling, 4 stacked frames, no-op starts, reward
clipping, centered RMSProp, Huber loss, 1M-transition replay storing one frame per transition)
with the Gymnasium backend.

    python experiments/atari.py [--game ALE/Pong-v5] [--total-steps N] [--out runs/atari]
                                [--terminal-on-life-loss] [--set FIELD=VALUE ...]

Needs the ``atari`` extra (``pip install -e ".[atari]"``). Writes the same run directory as
``dqn-jax train`` (``config.json``, ``episodes.csv``, ``metrics.jsonl``, ``evals.csv``,
``summary.json`` with ``replay_bytes_per_transition``, ``episodes.png``). The preset's full 50M
agent steps take days on a CPU; ``--total-steps`` shortens the run (the schedules stay the
paper's, so a short run never leaves the random-exploration phase unless you also pass e.g.
``--set learning_starts=1000 --set eps_duration=20000``). Equivalent CLI:
``dqn-jax train --preset nature-dqn --env ALE/Breakout-v5``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def parse_value(text: str):
    """``FIELD=VALUE`` values: JSON where it parses (numbers, true/false), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--game", default="ALE/Pong-v5", help="an ale-py id")
    p.add_argument("--total-steps", type=int, default=None, help="agent steps (preset: 50M)")
    p.add_argument("--out", type=Path, default=Path("runs/atari"))
    p.add_argument("--terminal-on-life-loss", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = p.parse_args()

    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)  # small host-loop programs
    from dqn_jax import host_loop
    from dqn_jax.config import from_preset

    overrides = dict(env=args.game, terminal_on_life_loss=args.terminal_on_life_loss)
    if args.total_steps:
        overrides["total_steps"] = args.total_steps
    for item in args.set:
        field, _, value = item.partition("=")
        overrides[field] = parse_value(value)
    config = from_preset("nature-dqn", **overrides)
    out = args.out / config.env.replace("/", "_")
    result = host_loop.train(config, out)
    s = result.summary
    print(
        f"{config.env}: {config.total_steps:,} agent steps, {s['env_steps_per_s']:.0f} steps/s, "
        f"final greedy return {s['final_eval_return_mean']}, replay "
        f"{s['replay_bytes_per_transition']:,.0f} bytes per transition "
        f"(one 84x84 frame = 7,056); run directory {out}"
    )


if __name__ == "__main__":
    main()
