"""IQN's fraction embedding: XLA's ``cos`` against :func:`dqn_jax.networks.cos_pi`.

IQN embeds each sampled fraction ``tau`` as ``cos(pi * i * tau)`` for ``i < 64``, for every
fraction of every batch item in three forward passes per update (``N``, ``N'`` and ``K``
fractions). Two tables, each side jitted, warmed up and timed with ``block_until_ready``; the
figure is the median over ``--repeats`` rounds of ``--calls`` calls, the two sides alternating
within each round so a change in the machine's load hits both alike:

- ``features``: the ``[B, T, 64]`` features alone, for CartPole's IQN (batch 64, ``T = N + K +
  N'`` = 16 + 8 + 16) and the paper's Atari sizes (batch 32, 64 + 32 + 64);
- ``gradient``: the gradient of the IQN loss (:func:`dqn_jax.distributional.iqn_head`) of the
  ``CartPole-v1`` preset with ``--variant iqn`` (its own fractions, MLP 64-64, batch 64), the
  whole update but the optimizer and the replay, with each cosine.

Also the largest difference of each from ``cos`` in float64 of the exact fraction. Prints
tables; asserts nothing.

    python benchmarks/iqn.py [--repeats 5] [--calls 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import alternate_us, header, table  # noqa: E402

from dqn_jax import config as dqn_config
from dqn_jax import networks, variants
from dqn_jax.agent import with_key
from dqn_jax.replay import Transition

NUM_COSINES = 64


def xla_cosine_features(taus: jax.Array, num_cosines: int) -> jax.Array:
    """The embedding written with ``jnp.cos``, as before :func:`dqn_jax.networks.cos_pi`."""
    return jnp.cos(jnp.pi * jnp.arange(num_cosines, dtype=jnp.float32) * taus[..., None])


SIDES = {"jnp.cos": xla_cosine_features, "cos_pi": networks.cosine_features}


def call_timer(fn, args, calls: int):
    """Warmed-up timer of the jitted ``fn(*args)``: one repeat = ``calls`` calls, synchronised
    at the end; returns seconds per call."""
    jax.block_until_ready(fn(*args))

    def repeat() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        return (time.perf_counter() - start) / calls

    return repeat


def gradient_program(features_fn, batch_size: int):
    """The jitted gradient of the CartPole-v1 preset's IQN loss with ``features_fn`` as the
    fraction embedding, and its arguments."""
    original = networks.cosine_features
    networks.cosine_features = features_fn
    try:
        cfg = dqn_config.from_preset("CartPole-v1", variant="iqn", batch_size=batch_size)
        net = networks.make_network(cfg, 2, (4,))
        head = variants.make_head(cfg)
        forward = with_key(net)
        key = jax.random.PRNGKey(0)
        rng = np.random.default_rng(0)
        obs = jnp.asarray(rng.normal(size=(batch_size, 4)), jnp.float32)
        batch = Transition(
            obs=obs,
            action=jnp.asarray(rng.integers(0, 2, batch_size), jnp.int32),
            reward=jnp.ones(batch_size),
            discount=jnp.full(batch_size, 0.99),
            next_obs=jnp.asarray(rng.normal(size=(batch_size, 4)), jnp.float32),
            last=jnp.zeros(batch_size),
        )
        params = net.init(key, obs[:1], key)

        def mean_loss(p, k):
            return jnp.mean(head.loss(forward, p, p, batch, k).loss)

        grad = jax.jit(jax.grad(mean_loss))
        jax.block_until_ready(grad(params, key))  # traced while the patch holds
        return grad, (params, key), cfg
    finally:
        networks.cosine_features = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    print(header("IQN fraction embedding: jnp.cos vs cos_pi (microseconds per call)"))

    rows = []
    rng = np.random.default_rng(0)
    for label, batch, fractions in (("CartPole iqn", 64, 40), ("Atari (paper)", 32, 160)):
        taus = jnp.asarray(rng.random((batch, fractions)), jnp.float32)
        exact = np.cos(np.pi * np.arange(NUM_COSINES) * np.asarray(taus, np.float64)[..., None])
        programs = {name: jax.jit(lambda t, f=fn: f(t, NUM_COSINES)) for name, fn in SIDES.items()}
        timers = {name: call_timer(fn, (taus,), args.calls) for name, fn in programs.items()}
        us = alternate_us(timers, args.repeats)
        for name, fn in programs.items():
            error = float(np.abs(np.asarray(fn(taus), np.float64) - exact).max())
            rows.append(
                {
                    "features": f"{label}: [{batch}, {fractions}, {NUM_COSINES}]",
                    "side": name,
                    "us/call": f"{us[name]:.0f}",
                    "max |error|": f"{error:.1e}",
                    "speed-up": f"{us['jnp.cos'] / us[name]:.2f}x",
                }
            )
    print(table(rows, ["features", "side", "us/call", "max |error|", "speed-up"]))
    print()

    built = {name: gradient_program(fn, 64) for name, fn in SIDES.items()}
    cfg = built["cos_pi"][2]
    programs = {name: program for name, (program, _, _) in built.items()}
    # Both programs take the same params and key (each built its own, identical ones).
    timers = {name: call_timer(fn, built["cos_pi"][1], args.calls) for name, fn in programs.items()}
    us = alternate_us(timers, args.repeats)
    fractions = (cfg.num_tau_samples, cfg.num_quantile_samples, cfg.num_tau_prime_samples)
    rows = [
        {
            "program": f"IQN loss gradient, batch 64, N/K/N' {'/'.join(map(str, fractions))}",
            "side": name,
            "us/call": f"{us[name]:.0f}",
            "speed-up": f"{us['jnp.cos'] / us[name]:.2f}x",
        }
        for name in programs
    ]
    print(table(rows, ["program", "side", "us/call", "speed-up"]))


if __name__ == "__main__":
    main()
