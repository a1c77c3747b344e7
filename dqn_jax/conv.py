"""A 2-D ``VALID`` convolution whose gradients stay fast inside loops on XLA:CPU.

XLA:CPU runs a convolution on its fast (Eigen) kernels only in the canonical layout
``NHWC x HWIO -> NHWC``; its pass that rewrites other layouts into that one visits only the
program's top level. The two convolutions of a gradient (``dx`` and ``dW``) come out of JAX's
autodiff in other layouts, so inside a ``scan`` or ``while`` (every update of the JAX driver's
chunks, and the host driver's update scan) they fall back to a naive loop, about ten times
slower than the same gradient at top level (README, "How it is built"). :func:`conv_valid`
writes both gradient convolutions in the canonical layout itself, with explicit transposes,
so the program is the same fast one wherever it is placed. The values are those of
``lax.conv_general_dilated``'s own gradients (tested against it).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, w: jax.Array, strides, rhs_dilation=(1, 1)) -> jax.Array:
    return lax.conv_general_dilated(
        x, w, strides, "VALID", rhs_dilation=rhs_dilation, dimension_numbers=_NHWC
    )


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_valid(x: jax.Array, w: jax.Array, strides: tuple[int, int]) -> jax.Array:
    """``x f32[B, H, W, Ci]`` convolved with ``w f32[kh, kw, Ci, Co]`` at ``strides``, no
    padding: ``f32[B, (H - kh) // sh + 1, (W - kw) // sw + 1, Co]``, as
    ``lax.conv_general_dilated(x, w, strides, "VALID")`` in NHWC/HWIO; both gradients are
    canonical-layout convolutions (see the module doc)."""
    return _conv(x, w, strides)


def _forward(x, w, strides):
    return _conv(x, w, strides), (x, w)


def _backward(strides, residuals, dy):
    x, w = residuals
    (sh, sw), (kh, kw) = strides, w.shape[:2]
    h, wo = dy.shape[1:3]
    # Rows and columns no window reads get no gradient: crop them for dW, pad them back for dx.
    used_h, used_w = (h - 1) * sh + kh, (wo - 1) * sw + kw
    # dx: the stride-dilated dy, padded by k - 1, against the flipped kernel with I and O swapped.
    w_flip = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    dx = lax.conv_general_dilated(
        dy,
        w_flip,
        (1, 1),
        [(kh - 1, kh - 1 + x.shape[1] - used_h), (kw - 1, kw - 1 + x.shape[2] - used_w)],
        lhs_dilation=(sh, sw),
        dimension_numbers=_NHWC,
    )
    # dW[i, j, c, o] = sum_{b, y, z} x[b, y s + i, z s + j, c] dy[b, y, z, o]: channels of x as
    # the batch, its batch as the features, dy (dilated by the stride) as the kernel.
    x_t = x[:, :used_h, :used_w].transpose(3, 1, 2, 0)  # [Ci, H', W', B]
    dy_t = dy.transpose(1, 2, 0, 3)  # [h, w, B, Co]
    dw = _conv(x_t, dy_t, (1, 1), rhs_dilation=(sh, sw))  # [Ci, kh, kw, Co]
    return dx.astype(x.dtype), dw.transpose(1, 2, 0, 3).astype(w.dtype)


conv_valid.defvjp(_forward, _backward)


def flax_conv_valid(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
):
    """:func:`conv_valid` with ``lax.conv_general_dilated``'s signature, for
    ``flax.linen.Conv(conv_general_dilated=...)`` (so parameter names and shapes stay
    ``nn.Conv``'s). Only what :func:`conv_valid` computes is accepted: ``VALID`` (or zero)
    padding, no dilation, one feature group, NHWC/HWIO; anything else is a ``ValueError``."""
    zero_pad = padding == "VALID" or all(tuple(p) == (0, 0) for p in padding)
    dims = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers or _NHWC)
    plain = all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
    if not (zero_pad and plain and feature_group_count == 1 and precision is None):
        raise ValueError(
            "conv_valid computes VALID convolutions without dilation, groups or precision: got "
            f"padding={padding!r}, lhs_dilation={lhs_dilation}, rhs_dilation={rhs_dilation}, "
            f"feature_group_count={feature_group_count}, precision={precision}"
        )
    if dims != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC):
        raise ValueError(f"conv_valid takes NHWC inputs and HWIO kernels, got {dims}")
    return conv_valid(lhs, rhs, tuple(window_strides))
