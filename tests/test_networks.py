"""Q-networks: plain parameter trees, noisy layers, dueling heads, distributional outputs, IQN."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dqn_jax.config import Config
from dqn_jax.networks import (
    ConvQNetwork,
    IQNNetwork,
    MLPQNetwork,
    NoisyDense,
    cos_pi,
    cosine_features,
    factorised_noise,
    make_network,
)

KEY = jax.random.PRNGKey(0)
OBS = jnp.asarray(np.random.default_rng(1).normal(size=(5, 4)), jnp.float32)
OBS16 = jnp.asarray(np.random.default_rng(2).normal(size=(5, 16)), jnp.float32)
FRAMES = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 4, 84, 84), np.uint8))


def tree_shapes(tree) -> dict[str, tuple[int, ...]]:
    """``{"Dense_0/kernel": shape, ...}`` of a ``{"params": ...}`` tree."""
    flat = jax.tree_util.tree_flatten_with_path(tree["params"])[0]
    return {"/".join(k.key for k in path): tuple(x.shape) for path, x in flat}


def shapes_of(net: nn.Module, obs) -> dict[str, tuple[int, ...]]:
    return tree_shapes(jax.eval_shape(net.init, KEY, obs))


# Each check runs as one jitted program (one compile instead of one per eager op). Random-bit
# generation is what is slow to compile on CPU: parameters that no check looks at are made on
# the host, and forward passes under several keys are one vmapped pass.


def random_params(net: nn.Module, obs, seed: int = 0, scale: float = 0.3):
    """Normal(0, scale) parameters of ``net``'s shapes, made on the host."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(net.init, KEY, obs)
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(0, scale, x.shape), x.dtype), shapes)


def capture(net: nn.Module, params, obs, *args, **kwargs) -> tuple:
    """``(output, {submodule name: its __call__ output})`` of one forward pass."""
    out, state = net.apply(
        params, obs, *args, capture_intermediates=True, mutable="intermediates", **kwargs
    )
    inter = state["intermediates"]
    return out, {name: v["__call__"][0] for name, v in inter.items() if name != "__call__"}


def noisy_layer_keys(net: nn.Module, params, obs, *args) -> list:
    """The ``key`` each :class:`NoisyDense` of ``net`` is called with, in call order."""
    keys = []

    def record(next_fun, call_args, call_kwargs, context):
        if isinstance(context.module, NoisyDense) and context.method_name == "__call__":
            keys.append(call_args[1] if len(call_args) > 1 else call_kwargs.get("key"))
        return next_fun(*call_args, **call_kwargs)

    with nn.intercept_methods(record):
        net.apply(params, obs, *args)
    return keys


# Plain networks: the parameter trees every existing run initialises.


def test_plain_mlp_parameter_tree():
    assert shapes_of(MLPQNetwork(2, (64, 64)), OBS) == {
        "Dense_0/bias": (64,),
        "Dense_0/kernel": (4, 64),
        "Dense_1/bias": (64,),
        "Dense_1/kernel": (64, 64),
        "Dense_2/bias": (2,),
        "Dense_2/kernel": (64, 2),
    }


def test_plain_mlp_notebook_init_is_uniform_pm1_with_zero_biases():
    net = MLPQNetwork(2, (64,), "notebook")
    params = jax.jit(net.init)(KEY, OBS)["params"]
    kernel = params["Dense_0"]["kernel"]
    assert 0.9 < float(jnp.abs(kernel).max()) <= 1.0
    assert not params["Dense_0"]["bias"].any() and not params["Dense_1"]["bias"].any()


def test_plain_nature_parameter_tree():
    assert shapes_of(ConvQNetwork(6), FRAMES) == {
        "Conv_0/bias": (32,),
        "Conv_0/kernel": (8, 8, 4, 32),
        "Conv_1/bias": (64,),
        "Conv_1/kernel": (4, 4, 32, 64),
        "Conv_2/bias": (64,),
        "Conv_2/kernel": (3, 3, 64, 64),
        "Dense_0/bias": (512,),
        "Dense_0/kernel": (3136, 512),
        "Dense_1/bias": (6,),
        "Dense_1/kernel": (512, 6),
    }


GRIDS = jnp.asarray(np.random.default_rng(3).random((3, 10, 10, 4)) < 0.3)  # MinAtar's bool cells


def test_plain_minatar_parameter_tree():
    assert shapes_of(ConvQNetwork(3, torso="minatar_cnn"), GRIDS) == {
        "Conv_0/bias": (16,),
        "Conv_0/kernel": (3, 3, 4, 16),
        "Dense_0/bias": (128,),
        "Dense_0/kernel": (1024, 128),
        "Dense_1/bias": (3,),
        "Dense_1/kernel": (128, 3),
    }


def layer_norm_numpy(x: np.ndarray, p: dict) -> np.ndarray:
    """flax's LayerNorm over the last axis (epsilon 1e-6), learned scale and bias."""
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def minatar_numpy(p: dict, grids: np.ndarray, layer_norm: bool) -> np.ndarray:
    """The MinAtar network by loops over the 8 x 8 valid positions of the 3 x 3 conv."""
    x = grids.astype(np.float64)
    w = p["Conv_0"]["kernel"]
    conv = np.zeros((x.shape[0], 8, 8, 16))
    for i in range(8):
        for j in range(8):
            conv[:, i, j] = np.einsum("bhwc,hwcf->bf", x[:, i : i + 3, j : j + 3], w)
    h = conv + p["Conv_0"]["bias"]
    h = np.maximum(layer_norm_numpy(h, p["LayerNorm_0"]) if layer_norm else h, 0)
    h = h.reshape(x.shape[0], -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    h = np.maximum(layer_norm_numpy(h, p["LayerNorm_1"]) if layer_norm else h, 0)
    return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


@pytest.mark.parametrize("layer_norm", [False, True])
def test_minatar_network_matches_a_numpy_conv(layer_norm):
    net = ConvQNetwork(3, torso="minatar_cnn", layer_norm=layer_norm)
    params = random_params(net, GRIDS, seed=4, scale=0.2)
    want = minatar_numpy(jax.tree.map(np.float64, params)["params"], np.asarray(GRIDS), layer_norm)
    got = jax.jit(net.apply)(params, GRIDS)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
    assert np.abs(want).max() > 0.1  # not a vacuous comparison of zeros


# NoisyDense.


@jax.jit
def noisy_dense_outputs(key):
    """``NoisyDense(4, sigma0)`` on ``[3, 16]`` inputs, for sigma0 0.5 and 0, initialised from
    ``key``: params and outputs without a key, under two keys, and of a
    plain dense layer with ``mu_w``, ``mu_b``."""
    x = OBS16[:3]
    keys = jax.random.split(jax.random.fold_in(key, 1))
    out = {}
    for sigma0 in (0.5, 0.0):
        layer = NoisyDense(4, sigma0)
        params = layer.init(key, x)
        plain = {"kernel": params["params"]["mu_w"], "bias": params["params"]["mu_b"]}
        out[sigma0] = dict(
            params=params["params"],
            mean=layer.apply(params, x),
            noisy=jax.vmap(lambda k, p=params, f=layer: f.apply(p, x, k))(keys),
            dense=nn.Dense(4).apply({"params": plain}, x),
        )
    return out


def test_noisy_dense_init_and_keys():
    r, again = noisy_dense_outputs(KEY)[0.5], noisy_dense_outputs(KEY)[0.5]
    assert {k: v.shape for k, v in r["params"].items()} == {
        "mu_w": (16, 4),
        "sigma_w": (16, 4),
        "mu_b": (4,),
        "sigma_b": (4,),
    }
    # The factorised init: mu ~ U[-1/sqrt(16), 1/sqrt(16)], sigma = sigma0 / sqrt(16).
    assert float(jnp.abs(r["params"]["mu_w"]).max()) <= 0.25
    assert float(jnp.abs(r["params"]["mu_b"]).max()) <= 0.25
    np.testing.assert_allclose(r["params"]["sigma_w"], 0.5 / 4)
    np.testing.assert_allclose(r["params"]["sigma_b"], 0.5 / 4)
    (k1, k2), (k1_again, _) = r["noisy"], again["noisy"]
    np.testing.assert_array_equal(k1, k1_again)
    assert not np.allclose(k1, k2) and not np.allclose(k1, r["mean"])
    np.testing.assert_allclose(r["mean"], r["dense"], rtol=1e-6, atol=1e-6)


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_noisy_dense_with_sigma0_zero_is_the_mean_layer_for_any_key(seed):
    r = noisy_dense_outputs(jax.random.PRNGKey(seed))[0.0]
    for noisy in r["noisy"]:
        np.testing.assert_allclose(noisy, r["dense"], rtol=1e-6, atol=1e-6)


@jax.jit
def noisy_probe(params, x, key):
    """A ``NoisyDense`` on ``[3, fan_in]`` inputs ``x`` under one noise sample from ``key``:
    its effective weights and bias, what the factorised noise says they should be, and its
    outputs on the batch and row by row."""
    p = params["params"]
    fan_in, fan_out = p["mu_w"].shape
    layer = NoisyDense(fan_out)
    # Probing with [0; I] gives the bias, then bias + each weight row.
    probe = jnp.concatenate([jnp.zeros((1, fan_in)), jnp.eye(fan_in), x])
    out = layer.apply(params, probe, key)
    b, w = out[0], out[1 : fan_in + 1] - out[0]
    f_in, f_out = factorised_noise(key, fan_in, fan_out)
    return dict(
        eps=(w - p["mu_w"]) / p["sigma_w"],
        outer=jnp.outer(f_in, f_out),
        b=b,
        want_b=p["mu_b"] + p["sigma_b"] * f_out,
        batch=out[fan_in + 1 :],
        rows=jax.vmap(lambda xi: layer.apply(params, xi[None], key)[0])(x),
    )


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_noisy_dense_noise_is_factorised_and_shared_over_the_batch(seed):
    rng = np.random.default_rng(seed)
    params = {
        "params": dict(
            mu_w=rng.normal(size=(5, 4)).astype(np.float32),
            mu_b=rng.normal(size=4).astype(np.float32),
            # Random positive sigmas, so the noise matrix is not hidden by a constant sigma.
            sigma_w=rng.uniform(0.1, 1.0, (5, 4)).astype(np.float32),
            sigma_b=rng.uniform(0.1, 1.0, 4).astype(np.float32),
        )
    }
    x = rng.normal(size=(3, 5)).astype(np.float32)
    r = noisy_probe(params, x, jax.random.PRNGKey(seed))
    np.testing.assert_allclose(r["eps"], r["outer"], rtol=1e-4, atol=1e-4)
    assert np.linalg.matrix_rank(np.asarray(r["eps"]), tol=1e-3) == 1
    np.testing.assert_allclose(r["b"], r["want_b"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r["batch"], r["rows"], rtol=1e-5, atol=1e-5)


# Noisy networks.


NOISY_MLP = MLPQNetwork(3, (8, 8), noisy=True)


@jax.jit
def noisy_mlp_outputs(params):
    """:data:`NOISY_MLP`'s Q under keys and without, the keys its noisy layers see, and the
    plain MLP's Q with the mean weights."""
    net = NOISY_MLP
    keys = jax.random.split(jax.random.PRNGKey(1))
    mean_params = {
        f"Dense_{i}": {"kernel": layer["mu_w"], "bias": layer["mu_b"]}
        for i, layer in enumerate(params["params"][f"NoisyDense_{j}"] for j in range(3))
    }
    return dict(
        params=params["params"],
        noisy=jax.vmap(lambda k: net.apply(params, OBS, k))(keys),
        mean=net.apply(params, OBS),
        plain=MLPQNetwork(3, (8, 8)).apply({"params": mean_params}, OBS),
        keys=noisy_layer_keys(net, params, OBS, keys[0]),
        no_keys=noisy_layer_keys(net, params, OBS),
    )


def test_noisy_mlp_every_dense_layer_is_noisy_with_its_own_key():
    params = random_params(NOISY_MLP, OBS)
    r, again = noisy_mlp_outputs(params), noisy_mlp_outputs(params)
    assert set(r["params"]) == {"NoisyDense_0", "NoisyDense_1", "NoisyDense_2"}
    (k1, k2), (k1_again, _) = r["noisy"], again["noisy"]
    np.testing.assert_array_equal(k1, k1_again)
    np.testing.assert_array_equal(r["mean"], again["mean"])
    assert not np.allclose(k1, k2) and not np.allclose(k1, r["mean"])
    np.testing.assert_allclose(r["mean"], r["plain"], rtol=1e-6, atol=1e-6)
    assert len(r["keys"]) == 3 and len({tuple(np.asarray(k).tolist()) for k in r["keys"]}) == 3
    assert r["no_keys"] == [None, None, None]


def test_noisy_nature_network_keeps_plain_convs():
    names = shapes_of(ConvQNetwork(6, noisy=True), FRAMES)
    assert {n.split("/")[0] for n in names} == {
        "Conv_0",
        "Conv_1",
        "Conv_2",
        "NoisyDense_0",
        "NoisyDense_1",
    }
    assert names["NoisyDense_0/sigma_w"] == (3136, 512)


# Dueling.


DUELING_MLPS = (
    MLPQNetwork(4, (8,), dueling=True),
    MLPQNetwork(1, (8,), dueling=True, noisy=True),
    MLPQNetwork(4, (8,), dueling=True, noisy=True, num_outputs=3),
)


@jax.jit
def dueling_parts(params: list, key) -> list:
    """``(Q, V, A)`` of each of :data:`DUELING_MLPS` (noise from ``key``)."""
    out = []
    for net, p in zip(DUELING_MLPS, params, strict=True):
        q, parts = capture(net, p, OBS, key if net.noisy else None)
        out.append((q, parts["value"], parts["advantage"]))
    return out


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_dueling_mlp_q_is_value_plus_centred_advantage(seed):
    params = [random_params(net, OBS, seed % 2**16) for net in DUELING_MLPS]
    parts = dueling_parts(params, jax.random.PRNGKey(seed))
    for net, (q, value, advantage) in zip(DUELING_MLPS, parts, strict=True):
        m = () if net.num_outputs is None else (net.num_outputs,)
        assert q.shape == (5, net.num_actions, *m)
        value = value.reshape(5, 1, *m)
        advantage = advantage.reshape(5, net.num_actions, *m)
        np.testing.assert_allclose(q.mean(axis=1, keepdims=True), value, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            q - q.mean(axis=1, keepdims=True),
            advantage - advantage.mean(axis=1, keepdims=True),
            rtol=1e-5,
            atol=1e-5,
        )


def test_dueling_nature_network_has_two_512_streams():
    names = shapes_of(ConvQNetwork(6, dueling=True, num_outputs=51), FRAMES)
    assert names["value_hidden_0/kernel"] == names["advantage_hidden_0/kernel"] == (3136, 512)
    assert names["value/kernel"] == (512, 51) and names["advantage/kernel"] == (512, 6 * 51)
    assert not any(n.startswith("Dense") for n in names)


def test_rainbow_nature_network_forward():
    net = ConvQNetwork(3, dueling=True, noisy=True, num_outputs=5)

    @jax.jit
    def run(params):
        q, parts = jax.vmap(lambda k: capture(net, params, FRAMES, k))(
            jax.random.split(jax.random.PRNGKey(1))
        )
        return q[0], q[1], net.apply(params, FRAMES), parts["value"][0]

    q1, q2, mean, value = run(random_params(net, FRAMES, scale=0.05))
    assert q1.shape == (2, 3, 5) and q1.dtype == jnp.float32
    assert not np.allclose(q1, q2) and not np.allclose(q1, mean)
    np.testing.assert_allclose(q1.mean(axis=1), value, rtol=1e-5, atol=1e-5)


# Output shapes.


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("noisy", [False, True])
@pytest.mark.parametrize("num_outputs", [None, 7])
def test_output_shapes(dueling, noisy, num_outputs):
    kw = dict(dueling=dueling, noisy=noisy, num_outputs=num_outputs)
    want = (2, 3) if num_outputs is None else (2, 3, num_outputs)
    for net, obs in ((MLPQNetwork(3, (8, 8), **kw), OBS[:2]), (ConvQNetwork(3, **kw), FRAMES)):
        params = jax.eval_shape(net.init, KEY, obs)
        for key in (None, KEY):
            q = jax.eval_shape(net.apply, params, obs, key)
            assert q.shape == want and q.dtype == jnp.float32


# IQN.


MIDPOINT_IQNS = (
    IQNNetwork(3, hidden_sizes=(16,), dueling=True),
    IQNNetwork(3, hidden_sizes=(16, 16), dueling=True, noisy=True),
)
SAMPLED_IQN = IQNNetwork(2, hidden_sizes=(8,), noisy=True)
IQN_PARAMS = dict(
    midpoints=[random_params(net, OBS) for net in MIDPOINT_IQNS],
    sampled=random_params(SAMPLED_IQN, OBS),
)


@jax.jit
def iqn_outputs(params: dict, key) -> dict:
    """``(quantiles, taus)`` lists: without a key, of each of :data:`MIDPOINT_IQNS` for 4
    fractions, 3 and 1; of :data:`SAMPLED_IQN` for 6 fractions under two keys split from
    ``key`` (stacked: ``f32[2, B, 6, A]``, ``f32[2, B, 6]``)."""
    midpoints = [
        [net.apply(p, OBS, num_taus=t) for t in (4, 3, 1)]
        for net, p in zip(MIDPOINT_IQNS, params["midpoints"], strict=True)
    ]
    sampled = jax.vmap(lambda k: SAMPLED_IQN.apply(params["sampled"], OBS, k, num_taus=6))(
        jax.random.split(key)
    )
    return dict(midpoints=midpoints, sampled=sampled)


def test_iqn_without_key_uses_midpoint_fractions_and_is_deterministic():
    again = iqn_outputs(IQN_PARAMS, KEY)["midpoints"]
    for outputs, outputs_again in zip(
        iqn_outputs(IQN_PARAMS, KEY)["midpoints"], again, strict=True
    ):
        (q4, t4), (q3, _), (q1, t1) = outputs
        q4_again = outputs_again[0][0]
        assert q4.shape == (5, 4, 3) and t4.shape == (5, 4)
        assert q4.dtype == t4.dtype == jnp.float32
        np.testing.assert_allclose(t4, np.broadcast_to([0.125, 0.375, 0.625, 0.875], (5, 4)))
        np.testing.assert_array_equal(q4, q4_again)
        # Quantiles are a function of (obs, tau): the middle of 1/6, 1/2, 5/6 is the lone 1/2.
        np.testing.assert_allclose(t1, 0.5)
        np.testing.assert_allclose(q3[:, 1], q1[:, 0], rtol=1e-5, atol=1e-5)
        assert not np.allclose(q3[:, 0], q3[:, 1]) and not np.allclose(q3[:, 2], q3[:, 1])


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_iqn_keys_sample_fractions_per_sample(seed):
    key = jax.random.PRNGKey(seed)
    (q1, q2), (t1, t2) = iqn_outputs(IQN_PARAMS, key)["sampled"]
    (q1_again, _), (t1_again, _) = iqn_outputs(IQN_PARAMS, key)["sampled"]
    assert t1.shape == (5, 6) and bool(((t1 >= 0) & (t1 < 1)).all())
    assert not np.allclose(t1, t2) and not np.allclose(q1, q2)
    assert not np.allclose(t1[0], t1[1])  # drawn per sample, not shared over the batch
    np.testing.assert_array_equal(t1, t1_again)
    np.testing.assert_array_equal(q1, q1_again)


def test_iqn_parameter_trees():
    mlp = shapes_of(IQNNetwork(2, hidden_sizes=(32, 16), num_cosines=8), OBS)
    assert mlp == {
        "Dense_0/bias": (32,),
        "Dense_0/kernel": (4, 32),
        "tau_embedding/bias": (32,),
        "tau_embedding/kernel": (8, 32),
        "Dense_1/bias": (16,),
        "Dense_1/kernel": (32, 16),
        "Dense_2/bias": (2,),
        "Dense_2/kernel": (16, 2),
    }
    # One hidden layer: the flattened observation is the feature that meets the embedding.
    single = shapes_of(IQNNetwork(2, hidden_sizes=(16,)), OBS)
    assert single["tau_embedding/kernel"] == (64, 4) and single["Dense_0/kernel"] == (4, 16)
    nature = IQNNetwork(6, torso="nature_cnn", dueling=True, noisy=True)
    params = jax.eval_shape(nature.init, KEY, FRAMES)
    names = tree_shapes(params)
    assert names["tau_embedding/kernel"] == (64, 3136)
    assert names["value_hidden_0/mu_w"] == names["advantage_hidden_0/mu_w"] == (3136, 512)
    assert names["advantage/mu_w"] == (512, 6) and "Conv_2/kernel" in names
    quantiles, taus = jax.eval_shape(lambda p: nature.apply(p, FRAMES, KEY, num_taus=8), params)
    assert quantiles.shape == (2, 8, 6) and taus.shape == (2, 8)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, width=32), min_size=1, max_size=64))
def test_cos_pi_is_cos_of_pi_times_its_argument(values):
    u = np.asarray(values, np.float32)
    exact = np.cos(np.pi * u.astype(np.float64))
    np.testing.assert_allclose(np.asarray(cos_pi(jnp.asarray(u))), exact, rtol=0, atol=1e-6)


def test_cos_pi_at_the_reduction_boundaries():
    u = np.asarray([0, 0.5, 1, 1.5, 2, -0.5, -1, 2.5, 3, 63, 0.4999999, 0.5000001], np.float32)
    exact = np.cos(np.pi * u.astype(np.float64))
    np.testing.assert_allclose(np.asarray(cos_pi(jnp.asarray(u))), exact, rtol=0, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_cosine_features_match_numpy_cos_of_the_exact_fraction(seed):
    taus = np.random.default_rng(seed).random((7, 5)).astype(np.float32)
    exact = np.cos(np.pi * np.arange(64) * taus.astype(np.float64)[..., None])
    features = np.asarray(cosine_features(jnp.asarray(taus), 64))
    assert features.shape == (7, 5, 64)
    # Only the float32 rounding of i * tau (i < 64) is left: under pi * ulp(64) / 2.
    np.testing.assert_allclose(features, exact, rtol=0, atol=1e-5)


def test_iqn_mlp_forward_matches_a_numpy_reference():
    net = IQNNetwork(3, hidden_sizes=(16, 8))
    params = random_params(net, OBS)
    quantiles, taus = net.apply(params, OBS, num_taus=4)
    p = {
        k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in params["params"].items()
    }
    obs = np.asarray(OBS, np.float64)
    fractions = (np.arange(4) + 0.5) / 4
    psi = np.maximum(obs @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)  # [B, 16]
    cosines = np.cos(np.pi * np.arange(64) * fractions[:, None])  # [T, 64]
    phi = np.maximum(cosines @ p["tau_embedding"]["kernel"] + p["tau_embedding"]["bias"], 0)
    h = psi[:, None, :] * phi[None]  # [B, T, 16]
    h = np.maximum(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"], 0)
    expected = h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]  # [B, T, 3]
    np.testing.assert_allclose(np.asarray(taus), np.broadcast_to(fractions, (5, 4)), atol=1e-7)
    np.testing.assert_allclose(np.asarray(quantiles), expected, rtol=1e-4, atol=1e-5)


# make_network.


def test_make_network_plain_config_is_the_plain_mlp():
    net = make_network(Config(variant="ddqn"), 2, (4,))
    assert isinstance(net, MLPQNetwork)
    assert (net.num_actions, net.hidden_sizes, net.init_scheme) == (2, (64, 64), "lecun")
    assert (net.dueling, net.noisy, net.num_outputs) == (False, False, None)


@pytest.mark.parametrize(
    "variant, kind, num_outputs",
    [
        ("dqn", MLPQNetwork, None),
        ("m_dqn", MLPQNetwork, None),
        ("c51", MLPQNetwork, 51),
        ("qr_dqn", MLPQNetwork, 200),
        ("rainbow", MLPQNetwork, 51),
        ("iqn", IQNNetwork, None),
    ],
)
def test_make_network_per_variant(variant, kind, num_outputs):
    config = Config(variant=variant, hidden_sizes=(32,), noisy_sigma0=0.25)
    net = make_network(config, 3, (4,))
    assert type(net) is kind and net.hidden_sizes == (32,)
    assert (net.dueling, net.noisy, net.sigma0) == (config.dueling, config.noisy, 0.25)
    if kind is MLPQNetwork:
        assert net.num_outputs == num_outputs
    else:
        assert net.torso == "mlp"


def test_make_network_nature_cnn():
    config = Config(variant="rainbow", network="nature_cnn", num_atoms=11)
    net = make_network(config, 6, (4, 84, 84))
    assert type(net) is ConvQNetwork
    assert (net.dueling, net.noisy, net.num_outputs) == (True, True, 11)
    iqn = make_network(Config(variant="iqn", network="nature_cnn"), 6, (4, 84, 84))
    assert type(iqn) is IQNNetwork and iqn.torso == "nature_cnn"
    with pytest.raises(ValueError, match=r"needs observations \[C, H, W\] with H, W >= 36"):
        make_network(config, 6, (4,))


def test_make_network_minatar_cnn():
    config = Config(variant="ddqn", network="minatar_cnn", layer_norm=True, dueling=True)
    net = make_network(config, 6, (10, 10, 4))
    assert type(net) is ConvQNetwork and net.torso == "minatar_cnn"
    assert (net.layer_norm, net.dueling) == (True, True)
    iqn = make_network(Config(variant="iqn", network="minatar_cnn"), 6, (10, 10, 4))
    assert type(iqn) is IQNNetwork and iqn.torso == "minatar_cnn"
    quantiles, _ = jax.eval_shape(lambda: iqn.apply(iqn.init(KEY, GRIDS), GRIDS))
    assert quantiles.shape == (3, 32, 6)
    assert shapes_of(iqn, GRIDS)["tau_embedding/kernel"] == (64, 1024)
    with pytest.raises(ValueError, match=r"minatar_cnn' needs observations \[H, W, C\]"):
        make_network(config, 6, (4,))
