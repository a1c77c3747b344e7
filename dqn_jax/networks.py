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


class NatureQNetwork(nn.Module):
    """The Nature DQN network (Mnih et al., 2015): ``obs uint8[B, S, 84, 84] -> Q f32[B, A]``.

    ``S`` stacked frames come first (as ``gymnasium.wrappers.FrameStackObservation`` gives them);
    pixels are scaled from ``[0, 255]`` to ``[0, 1]`` float32 and moved to NHWC (frames become
    channels). Then conv 32 8x8 stride 4, conv 64 4x4 stride 2, conv 64 3x3 stride 1 (all
    ``VALID``: 84 -> 20 -> 9 -> 7), dense 512, dense ``num_actions``, ReLU after all but the
    last. Flax's default initializers (LeCun normal weights, zero biases). 1,687,206 parameters
    for 6 actions and 4 frames.
    """

    num_actions: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = jnp.transpose(obs.astype(jnp.float32) / 255.0, (0, 2, 3, 1))
        for features, size, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
            x = nn.Conv(features, (size, size), strides=(stride, stride), padding="VALID")(x)
            x = nn.relu(x)
        x = nn.relu(nn.Dense(512)(x.reshape((x.shape[0], -1))))
        return nn.Dense(self.num_actions)(x)


def make_network(config, num_actions: int, obs_shape: tuple[int, ...]) -> nn.Module:
    """The config's Q-network: ``mlp`` (``hidden_sizes``, ``init_scheme``) or ``nature_cnn``
    (for ``[C, H, W]`` frames with ``H, W >= 36``; ``ValueError`` otherwise)."""
    if config.network == "nature_cnn":
        if len(obs_shape) != 3 or min(obs_shape[1:]) < 36:
            raise ValueError(
                f"network='nature_cnn' needs observations [C, H, W] with H, W >= 36; "
                f"{config.env!r} gives {list(obs_shape)}"
            )
        return NatureQNetwork(num_actions)
    return MLPQNetwork(num_actions, config.hidden_sizes, config.init_scheme)
