"""Q-networks (flax.linen)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def uniform_pm1(key, shape, dtype=jnp.float32) -> jax.Array:
    """Weights uniform in [-1, 1]: the notebook's ``tf.random_uniform(shape, -1.0, 1.0)``."""
    return jax.random.uniform(key, shape, dtype, -1.0, 1.0)


class MLPQNetwork(nn.Module):
    """``obs f32[B, *obs_shape] -> Q f32[B, num_actions]``: flattened input, ReLU hidden layers.

    ``init_scheme``: ``"lecun"`` (flax's LeCun-normal weights, the default) or ``"notebook"``
    (uniform in [-1, 1] weights). Biases start at zero in both.
    """

    num_actions: int
    hidden_sizes: Sequence[int] = (64, 64)
    init_scheme: str = "lecun"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        kernel_init = (
            uniform_pm1 if self.init_scheme == "notebook" else nn.initializers.lecun_normal()
        )
        x = obs.reshape((obs.shape[0], -1)).astype(jnp.float32)
        for size in self.hidden_sizes:
            x = nn.relu(nn.Dense(size, kernel_init=kernel_init)(x))
        return nn.Dense(self.num_actions, kernel_init=kernel_init)(x)
