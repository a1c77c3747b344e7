"""Q-networks (flax.linen) for the DQN family.

Every network is called as ``net.apply(params, obs, key=None, ...)``. ``key=None`` gives the
deterministic output (noisy layers at their mean weights, IQN at evenly spaced fractions): what
evaluation uses. A key gives the noise of that forward pass: one sample of each noisy layer's
factorised noise, shared by the whole batch (Fortunato et al. 2018, as in Rainbow); every noisy
layer draws from its own key, split from the call's key.

Outputs: ``Q f32[B, A]``; with ``num_outputs=m``, ``f32[B, A, m]`` (C51 logits over atoms,
QR-DQN quantiles); :class:`IQNNetwork` gives ``(quantiles f32[B, T, A], taus f32[B, T])``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dqn_jax.conv import flax_conv_valid
from dqn_jax.variants import VARIANTS


def uniform_pm1(key, shape, dtype=jnp.float32) -> jax.Array:
    """Weights uniform in [-1, 1]: the notebook's ``tf.random_uniform(shape, -1.0, 1.0)``."""
    return jax.random.uniform(key, shape, dtype, -1.0, 1.0)


def scaled_noise(x: jax.Array) -> jax.Array:
    """The factorised-noise transform ``f(e) = sign(e) * sqrt(|e|)``, elementwise."""
    return jnp.sign(x) * jnp.sqrt(jnp.abs(x))


def factorised_noise(key: jax.Array, fan_in: int, fan_out: int) -> tuple[jax.Array, jax.Array]:
    """``(f(e_in) f32[fan_in], f(e_out) f32[fan_out])`` for ``e_in, e_out ~ N(0, 1)``: the
    weight noise is ``outer(f(e_in), f(e_out))``, the bias noise ``f(e_out)``."""
    # One draw for both vectors: each random call is a threefry loop of its own in the
    # compiled program, and a rainbow update calls every layer several times.
    f = scaled_noise(jax.random.normal(key, (fan_in + fan_out,), jnp.float32))
    return f[:fan_in], f[fan_in:]


class NoisyDense(nn.Module):
    """Factorised Gaussian noisy linear layer (Fortunato et al. 2018): ``x f32[..., in] ->
    f32[..., features]``.

    ``w = mu_w + sigma_w * outer(f(e_in), f(e_out))``, ``b = mu_b + sigma_b * f(e_out)`` with
    fresh noise from ``key``; ``key=None`` uses ``mu_w``, ``mu_b``. Parameters ``mu_w``,
    ``sigma_w [in, features]``, ``mu_b``, ``sigma_b [features]``; the paper's factorised init:
    ``mu ~ U[-1/sqrt(in), 1/sqrt(in)]``, ``sigma = sigma0 / sqrt(in)``.
    """

    features: int
    sigma0: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        fan_in = x.shape[-1]
        bound = fan_in**-0.5

        def mu_init(k, shape):
            return jax.random.uniform(k, shape, jnp.float32, -bound, bound)

        def sigma_init(_, shape):
            return jnp.full(shape, self.sigma0 * bound, jnp.float32)

        mu_w = self.param("mu_w", mu_init, (fan_in, self.features))
        sigma_w = self.param("sigma_w", sigma_init, (fan_in, self.features))
        mu_b = self.param("mu_b", mu_init, (self.features,))
        sigma_b = self.param("sigma_b", sigma_init, (self.features,))
        if key is None:
            return x @ mu_w + mu_b
        f_in, f_out = factorised_noise(key, fan_in, self.features)
        w = mu_w + sigma_w * jnp.outer(f_in, f_out)
        return x @ w + (mu_b + sigma_b * f_out)


def _layer_keys(key: jax.Array | None) -> Iterator[jax.Array | None]:
    """Distinct keys for the successive noisy layers of one forward pass (all None for None)."""
    i = 0
    while True:
        yield None if key is None else jax.random.fold_in(key, i)
        i += 1


def _layer_fn(noisy: bool, sigma0: float, kernel_init, key: jax.Array | None) -> Callable:
    """``layer(features, x, name=None) -> f32[..., features]``: builds one dense layer in the
    calling module (a :class:`NoisyDense` fed the next layer key, or a plain ``nn.Dense``) and
    applies it to ``x``. Plain layers keep flax's auto names (``Dense_0``, ...)."""
    keys = _layer_keys(key)

    def layer(features: int, x: jax.Array, name: str | None = None) -> jax.Array:
        if noisy:
            return NoisyDense(features, sigma0, name=name)(x, next(keys))
        return nn.Dense(features, kernel_init=kernel_init, name=name)(x)

    return layer


def _kernel_init(init_scheme: str):
    return uniform_pm1 if init_scheme == "notebook" else nn.initializers.lecun_normal()


def dueling_combine(value: jax.Array, advantage: jax.Array, action_axis: int) -> jax.Array:
    """``Q = V + A - mean_a A``: ``value`` has size 1 on ``action_axis``, ``advantage`` A."""
    return value + advantage - advantage.mean(axis=action_axis, keepdims=True)


def _action_outputs(
    layer: Callable, x: jax.Array, num_actions: int, num_outputs: int | None, name=None
) -> jax.Array:
    """A linear layer ``f32[..., d] -> f32[..., num_actions(, num_outputs)]``."""
    m = num_outputs or 1
    out = layer(num_actions * m, x, name)
    return out if num_outputs is None else out.reshape(*x.shape[:-1], num_actions, m)


def _output(
    layer: Callable,
    streams: Sequence[int],
    x: jax.Array,
    num_actions: int,
    num_outputs: int | None,
    dueling: bool,
    layer_norm: bool = False,
) -> jax.Array:
    """The layers after the shared features ``x f32[..., d]``: hidden layers of widths
    ``streams`` (ReLU; a LayerNorm before it with ``layer_norm``), then the output
    ``f32[..., A(, m)]``. Dueling: a value and an advantage stream, each with its own
    ``streams`` hidden layers, combined by :func:`dueling_combine`."""

    def hidden(width: int, h: jax.Array, name: str | None = None) -> jax.Array:
        h = layer(width, h, name)
        return nn.relu(nn.LayerNorm()(h) if layer_norm else h)

    if not dueling:
        for width in streams:
            x = hidden(width, x)
        return _action_outputs(layer, x, num_actions, num_outputs)
    v, a = x, x
    for i, width in enumerate(streams):
        v = hidden(width, v, f"value_hidden_{i}")
        a = hidden(width, a, f"advantage_hidden_{i}")
    value = _action_outputs(layer, v, 1, num_outputs, "value")
    advantage = _action_outputs(layer, a, num_actions, num_outputs, "advantage")
    return dueling_combine(value, advantage, -1 if num_outputs is None else -2)


def _flat(obs: jax.Array) -> jax.Array:
    return obs.reshape((obs.shape[0], -1)).astype(jnp.float32)


def _nature_convs(obs: jax.Array, layer_norm: bool = False) -> jax.Array:
    """``obs uint8[B, S, 84, 84] -> f32[B, 3136]``: pixels to [0, 1] in NHWC (frames become
    channels), conv 32 8x8/4, conv 64 4x4/2, conv 64 3x3/1 (``VALID``, ReLU; a LayerNorm over
    channels before each ReLU with ``layer_norm``), flattened."""
    x = jnp.transpose(obs.astype(jnp.float32) / 255.0, (0, 2, 3, 1))
    for features, size, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
        x = nn.Conv(
            features,
            (size, size),
            strides=(stride, stride),
            padding="VALID",
            conv_general_dilated=flax_conv_valid,
        )(x)
        x = nn.relu(nn.LayerNorm()(x) if layer_norm else x)
    return x.reshape((x.shape[0], -1))


def _minatar_conv(obs: jax.Array, layer_norm: bool = False) -> jax.Array:
    """``obs [B, H, W, C] -> f32[B, 16 (H - 2) (W - 2)]`` (1024 for MinAtar's 10 x 10): the
    channels-last grid of 0/1 cells (bool or float), one conv 16 3x3/1 (``VALID``, ReLU; a
    LayerNorm over channels before it with ``layer_norm``), flattened (Young & Tian 2019)."""
    x = nn.Conv(16, (3, 3), padding="VALID", conv_general_dilated=flax_conv_valid)(
        obs.astype(jnp.float32)
    )
    x = nn.relu(nn.LayerNorm()(x) if layer_norm else x)
    return x.reshape((x.shape[0], -1))


# Each image network: its conv torso, the width of the hidden dense layer after it, and the
# observations it takes (``[C, H, W]`` frames or ``[H, W, C]`` grids, the smallest H and W).
CONV_TORSOS: dict[str, tuple[Callable, int, str, int]] = {
    "nature_cnn": (_nature_convs, 512, "[C, H, W]", 36),
    "minatar_cnn": (_minatar_conv, 128, "[H, W, C]", 3),
}


class MLPQNetwork(nn.Module):
    """``obs f32[B, *obs_shape] -> Q f32[B, num_actions]`` (``f32[B, A, num_outputs]`` with
    ``num_outputs``): flattened input, ReLU hidden layers, a linear output.

    ``init_scheme``: ``"lecun"`` (flax's LeCun-normal weights, the default) or ``"notebook"``
    (uniform in [-1, 1] weights); biases start at zero in both. ``noisy``: every dense layer is
    a :class:`NoisyDense` (its own init; ``init_scheme`` is then ignored). ``dueling``: the
    output is ``V + A - mean_a A`` with ``V`` and ``A`` linear layers on the last hidden
    features. ``layer_norm``: a LayerNorm (learned scale and offset) after each hidden dense,
    before its ReLU (PQN's network).
    """

    num_actions: int
    hidden_sizes: Sequence[int] = (64, 64)
    init_scheme: str = "lecun"
    layer_norm: bool = False
    dueling: bool = False
    noisy: bool = False
    sigma0: float = 0.5
    num_outputs: int | None = None

    @nn.compact
    def __call__(self, obs: jax.Array, key: jax.Array | None = None) -> jax.Array:
        layer = _layer_fn(self.noisy, self.sigma0, _kernel_init(self.init_scheme), key)
        x = _flat(obs)
        for size in self.hidden_sizes:
            x = layer(size, x)
            x = nn.relu(nn.LayerNorm()(x) if self.layer_norm else x)
        return _output(layer, (), x, self.num_actions, self.num_outputs, self.dueling)


class ConvQNetwork(nn.Module):
    """An image Q-network: ``obs -> Q f32[B, A]`` (``f32[B, A, num_outputs]`` with
    ``num_outputs``), a conv torso of :data:`CONV_TORSOS`, one hidden dense layer (ReLU), the
    output. Flax's default initializers (LeCun normal weights, zero biases).

    ``torso="nature_cnn"``: the Nature DQN network (Mnih et al., 2015) for ``uint8[B, S, 84,
    84]``, ``S`` stacked frames first (as ``gymnasium.wrappers.FrameStackObservation`` gives
    them); pixels are scaled from ``[0, 255]`` to ``[0, 1]`` float32 and moved to NHWC (frames
    become channels). Then conv 32 8x8 stride 4, conv 64 4x4 stride 2, conv 64 3x3 stride 1 (all
    ``VALID``: 84 -> 20 -> 9 -> 7), dense 512. 1,687,206 parameters for 6 actions and 4 frames.
    ``torso="minatar_cnn"``: the MinAtar network (Young & Tian 2019) for ``[B, 10, 10, C]``
    grids: conv 16 3x3 stride 1 (``VALID``), dense 128.

    ``noisy``: the dense layers (not the convs) are :class:`NoisyDense`, as in Rainbow.
    ``dueling``: a value and an advantage stream, each its hidden dense layer + ReLU then its
    output layer, combined as ``V + A - mean_a A`` (Wang et al. 2016). ``layer_norm``: a
    LayerNorm before every ReLU (over channels after a conv), as in PQN's MinAtar and Atari
    networks.
    """

    num_actions: int
    torso: str = "nature_cnn"
    dueling: bool = False
    noisy: bool = False
    sigma0: float = 0.5
    num_outputs: int | None = None
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array, key: jax.Array | None = None) -> jax.Array:
        convs, width, _, _ = CONV_TORSOS[self.torso]
        layer = _layer_fn(self.noisy, self.sigma0, nn.initializers.lecun_normal(), key)
        x = convs(obs, self.layer_norm)
        return _output(
            layer, (width,), x, self.num_actions, self.num_outputs, self.dueling, self.layer_norm
        )


def midpoint_taus(batch: int, num_taus: int) -> jax.Array:
    """``f32[batch, num_taus]`` with ``taus[b, i] = (i + 0.5) / num_taus``."""
    taus = (jnp.arange(num_taus, dtype=jnp.float32) + 0.5) / num_taus
    return jnp.broadcast_to(taus, (batch, num_taus))


# Taylor coefficients of cos(x) in y = x**2 up to y**6, highest first: on |x| <= pi / 2 the
# first term left out is below 1e-8, under float32's rounding of the argument.
_COS_TAYLOR = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(6, -1, -1))


def cos_pi(u: jax.Array) -> jax.Array:
    """``cos(pi * u)`` elementwise, to float32 rounding: ``u`` reduced exactly to ``|x| <=
    1/2`` by the period 2 and the reflection ``cos(pi (1 - x)) = -cos(pi x)``, then a Taylor
    polynomial. XLA:CPU's ``cos`` costs several times this polynomial (``benchmarks/iqn.py``)."""
    v = jnp.abs(u - 2.0 * jnp.round(0.5 * u))  # [0, 1], same cosine
    flip = v > 0.5
    x = jnp.pi * jnp.where(flip, 1.0 - v, v)  # [0, pi / 2]
    y = x * x
    c = jnp.full_like(y, _COS_TAYLOR[0])
    for coefficient in _COS_TAYLOR[1:]:
        c = c * y + coefficient
    return jnp.where(flip, -c, c)


def cosine_features(taus: jax.Array, num_cosines: int) -> jax.Array:
    """``taus f32[...] -> f32[..., num_cosines]``: ``cos(pi * i * tau)`` for ``i = 0..n-1``."""
    return cos_pi(jnp.arange(num_cosines, dtype=jnp.float32) * taus[..., None])


class IQNNetwork(nn.Module):
    """Implicit quantile network (Dabney et al. 2018): ``obs [B, *obs_shape] -> (quantiles
    f32[B, T, A], taus f32[B, T])``, the quantiles of each action's return at fractions
    ``taus``.

    Features ``psi(x) f32[B, d]`` from the torso are multiplied by the fraction embedding
    ``phi(tau)_j = ReLU(sum_i cos(pi i tau) w_ij + b_j)`` (``i < num_cosines``, a plain dense
    layer named ``tau_embedding``), then go through the last layers, per fraction.
    ``torso="mlp"``: all ``hidden_sizes`` but the last (none: the flattened obs is ``psi``),
    then after the merge the last hidden layer (ReLU) and the output, as in
    :class:`MLPQNetwork`. ``torso`` a :data:`CONV_TORSOS` name: its convs (``d = 3136`` for
    ``nature_cnn``), then after the merge its hidden dense layer (ReLU) and the output, as in
    :class:`ConvQNetwork`.
    ``dueling``, ``noisy`` shape the post-merge layers as in those networks; ``noisy`` also
    makes the MLP torso's dense layers noisy (never the embedding nor the convs).
    ``init_scheme`` sets the plain dense layers' weights.
    """

    num_actions: int
    torso: str = "mlp"
    hidden_sizes: Sequence[int] = (64, 64)
    init_scheme: str = "lecun"
    dueling: bool = False
    noisy: bool = False
    sigma0: float = 0.5
    num_cosines: int = 64

    @nn.compact
    def __call__(
        self, obs: jax.Array, key: jax.Array | None = None, num_taus: int = 32
    ) -> tuple[jax.Array, jax.Array]:
        k_tau, k_noise = (None, None) if key is None else jax.random.split(key)
        kernel_init = _kernel_init(self.init_scheme)
        layer = _layer_fn(self.noisy, self.sigma0, kernel_init, k_noise)
        mlp = self.torso not in CONV_TORSOS
        psi = _flat(obs) if mlp else CONV_TORSOS[self.torso][0](obs)
        for size in self.hidden_sizes[:-1] if mlp else ():
            psi = nn.relu(layer(size, psi))
        batch = obs.shape[0]
        if k_tau is None:
            taus = midpoint_taus(batch, num_taus)
        else:
            taus = jax.random.uniform(k_tau, (batch, num_taus), jnp.float32)
        embedding = nn.Dense(psi.shape[-1], kernel_init=kernel_init, name="tau_embedding")
        h = psi[:, None, :] * nn.relu(embedding(cosine_features(taus, self.num_cosines)))
        for size in self.hidden_sizes[-1:] if mlp else ():
            h = nn.relu(layer(size, h))
        streams = () if mlp else (CONV_TORSOS[self.torso][1],)
        quantiles = _output(layer, streams, h, self.num_actions, None, self.dueling)
        return quantiles, taus


_NUM_OUTPUTS_FIELD = {"categorical": "num_atoms", "quantile": "num_quantiles"}


def make_network(config, num_actions: int, obs_shape: tuple[int, ...]) -> nn.Module:
    """The config's Q-network: ``mlp`` (``hidden_sizes``, ``init_scheme``) or a
    :data:`CONV_TORSOS` network (``nature_cnn`` for ``[C, H, W]`` frames with ``H, W >= 36``,
    ``minatar_cnn`` for ``[H, W, C]`` grids; ``ValueError`` for other observations), shaped by
    ``dueling``, ``noisy`` (``noisy_sigma0``), ``layer_norm`` and the variant's head:
    ``num_atoms`` outputs per action for ``categorical``, ``num_quantiles`` for ``quantile``,
    an :class:`IQNNetwork` for ``iqn``, else one Q-value per action."""
    cnn = config.network in CONV_TORSOS
    if cnn:
        _, _, layout, smallest = CONV_TORSOS[config.network]
        spatial = obs_shape[1:] if layout == "[C, H, W]" else obs_shape[:2]
        if len(obs_shape) != 3 or min(spatial) < smallest:
            raise ValueError(
                f"network={config.network!r} needs observations {layout} with H, W >= "
                f"{smallest}; {config.env!r} gives {list(obs_shape)}"
            )
    options = dict(dueling=config.dueling, noisy=config.noisy, sigma0=config.noisy_sigma0)
    mlp = dict(hidden_sizes=config.hidden_sizes, init_scheme=config.init_scheme)
    head = VARIANTS[config.variant].head
    if head == "iqn":
        torso = dict(torso=config.network) if cnn else mlp
        return IQNNetwork(num_actions, **torso, **options)
    field = _NUM_OUTPUTS_FIELD.get(head)
    options["num_outputs"] = None if field is None else getattr(config, field)
    options["layer_norm"] = config.layer_norm
    if cnn:
        return ConvQNetwork(num_actions, torso=config.network, **options)
    return MLPQNetwork(num_actions, **mlp, **options)
