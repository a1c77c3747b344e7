"""dqn_jax.conv: values and both gradients equal lax's own; canonical inside loops; refusals."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from dqn_jax.conv import conv_valid, flax_conv_valid

NHWC = ("NHWC", "HWIO", "NHWC")


def lax_conv(x, w, strides):
    return lax.conv_general_dilated(x, w, strides, "VALID", dimension_numbers=NHWC)


@settings(max_examples=8, deadline=None)
@given(
    st.integers(1, 3),  # batch
    st.integers(1, 4),  # kernel height
    st.integers(1, 4),  # kernel width
    st.integers(1, 4),  # stride height
    st.integers(1, 3),  # stride width
    st.integers(0, 6),  # rows beyond the kernel (some left unread by the stride)
    st.integers(0, 6),
    st.integers(1, 3),  # in channels
    st.integers(1, 3),  # out channels
    st.integers(0, 2**31 - 1),
)
def test_values_and_gradients_match_lax(b, kh, kw, sh, sw, extra_h, extra_w, ci, co, seed):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(b, kh + extra_h, kw + extra_w, ci)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kh, kw, ci, co)), jnp.float32)
    y_ref, vjp_ref = jax.vjp(lambda x, w: lax_conv(x, w, (sh, sw)), x, w)
    y, vjp = jax.vjp(lambda x, w: conv_valid(x, w, (sh, sw)), x, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
    dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    for got, want in zip(vjp(dy), vjp_ref(dy), strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def compiled_conv_layouts(fn, *args) -> list[str]:
    text = jax.jit(fn).lower(*args).compile().as_text()
    return re.findall(r"convolution\(.*?dim_labels=([^,\s]+)", text)


def test_gradients_inside_a_scan_compile_to_canonical_convolutions():
    # The Nature torso's geometry (84x84, 8x8/4, 4x4/2, 3x3/1; fewer channels) inside a while
    # loop: every convolution of the forward pass, of dx and of dW is in the NHWC x HWIO ->
    # NHWC layout XLA:CPU's fast kernels take (see the module doc). (XLA swaps the operands of
    # a dx whose cotangent is smaller than the kernel, or constant: not the case here.)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 84, 84, 4)), jnp.float32)
    ws = (jnp.ones((8, 8, 4, 8)), jnp.ones((4, 4, 8, 8)), jnp.ones((3, 3, 8, 8)))

    def loss(ws, x):
        for w, s in zip(ws, (4, 2, 1), strict=True):
            x = jax.nn.relu(conv_valid(x, w, (s, s)))
        return jnp.sin(x).sum()

    def grads_in_scan(ws, x):
        def body(carry, _):
            grads = jax.grad(loss)(carry, x)
            return jax.tree.map(lambda w, g: w - 1e-3 * g, carry, grads), None

        return jax.lax.scan(body, ws, None, length=2)[0]

    layouts = compiled_conv_layouts(grads_in_scan, ws, x)
    assert len(layouts) == 8  # 3 forward, 2 dx (the input needs none), 3 dW
    assert set(layouts) == {"b01f_01io->b01f"}


def test_flax_conv_keeps_parameters_and_values():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 12, 12, 3)), jnp.float32)
    ours = nn.Conv(5, (3, 3), strides=(2, 2), padding="VALID", conv_general_dilated=flax_conv_valid)
    plain = nn.Conv(5, (3, 3), strides=(2, 2), padding="VALID")
    params = plain.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(
        jnp.shape, params
    )
    np.testing.assert_allclose(ours.apply(params, x), plain.apply(params, x), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(padding="SAME"), "padding='SAME'"),
        (dict(padding="VALID", kernel_dilation=(2, 2)), "rhs_dilation"),
        (dict(padding="VALID", feature_group_count=3), "feature_group_count=3"),
    ],
)
def test_flax_conv_refuses_what_it_does_not_compute(kwargs, words):
    conv = nn.Conv(3, (3, 3), conv_general_dilated=flax_conv_valid, **kwargs)
    with pytest.raises(ValueError, match=re.escape(words)):
        conv.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
