"""2-D patch-grid pieces shared by the bidirectional vision mixers (docs/mixers.md#patch-grid).

These mixers see tokens as x [B, T, D] laid out row-major on an H x W patch grid (token
t = row * W + col, the `(h w)` flattening of the official code). `grid_shape` recovers (H, W):
a square grid by default, or H rows given by the mixer's `grid_height` option.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def grid_shape(name: str, length: int, height: int = 0) -> tuple[int, int]:
    """(H, W) with H * W = length: H = height if given, else the square side."""
    if height:
        if length % height:
            raise ValueError(
                f"mixer {name!r}: T={length} tokens do not fill a grid of {height} rows"
            )
        return height, length // height
    side = math.isqrt(length)
    if side * side != length:
        raise ValueError(
            f"mixer {name!r}: T={length} is not a square number of patch tokens; set the "
            f"option grid_height to lay them out on a grid_height x (T / grid_height) grid"
        )
    return side, side


def check_grid_height(name: str, height: int) -> None:
    if height < 0:
        raise ValueError(f"mixer {name!r}: grid_height must be >= 0 (0: square), got {height}")


def depthwise_conv2d(x_BTC: jax.Array, w_KKC: jax.Array, h: int, w: int) -> jax.Array:
    """Zero-padded 'same' depthwise cross-correlation on the grid (PyTorch Conv2d, groups=C).

    `w` may also carry a batch axis, [B, U, U, D] (a kernel per image, InLine's dynamic conv):
    the batch is then folded into the channel groups, as the official code does.
    """
    b, t, c = x_BTC.shape
    x_BPQD = x_BTC.reshape(b, h, w, c)
    if w_KKC.ndim == 4:  # per-image kernels: one group per (image, channel)
        k = w_KKC.shape[1]
        x_1PQD = x_BPQD.transpose(1, 2, 0, 3).reshape(1, h, w, b * c)
        w_UU1D = w_KKC.transpose(1, 2, 0, 3).reshape(k, k, 1, b * c)
        y = _conv(x_1PQD, w_UU1D, b * c)
        return y.reshape(h, w, b, c).transpose(2, 0, 1, 3).reshape(b, t, c)
    k = w_KKC.shape[0]
    return _conv(x_BPQD, w_KKC.reshape(k, k, 1, c), c).reshape(b, t, c)


def _conv(x_BPQD: jax.Array, w_UU1D: jax.Array, groups: int) -> jax.Array:
    pad = w_UU1D.shape[0] // 2
    return jax.lax.conv_general_dilated(
        x_BPQD,
        w_UU1D.astype(x_BPQD.dtype),
        window_strides=(1, 1),
        padding=((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


class DepthwiseConv2d(nnx.Module):
    """k x k depthwise conv with bias over the patch grid (LePE / DWC of the vision mixers)."""

    def __init__(self, channels: int, size: int, *, rngs: nnx.Rngs):
        if size < 1 or size % 2 == 0:
            raise ValueError(f"depthwise conv size must be odd and positive, got {size}")
        bound = 1.0 / size  # PyTorch's default: U(+-1/sqrt(fan_in)), fan_in = size * size
        shape = (size, size, channels)
        kernel = jax.random.uniform(rngs.params(), shape, minval=-bound, maxval=bound)
        self.kernel = nnx.Param(kernel)
        bias = jax.random.uniform(rngs.params(), (channels,), minval=-bound, maxval=bound)
        self.bias = nnx.Param(bias)

    def __call__(self, x_BTC: jax.Array, h: int, w: int) -> jax.Array:
        y = depthwise_conv2d(x_BTC, self.kernel[...], h, w)
        return y + self.bias[...].astype(y.dtype)[None, None]


def rope_2d(x_BTHK: jax.Array, h: int, w: int) -> jax.Array:
    """2-D rotary embedding of MALA/RALA (`theta_shift`): the first K/2 dims rotate with the row,
    the last K/2 with the column; pairs (2i, 2i+1) rotate together. Computed in fp32."""
    k = x_BTHK.shape[-1]
    angle = 1.0 / 10000.0 ** jnp.linspace(0.0, 1.0, k // 4)
    angle = jnp.repeat(angle, 2)  # one angle per rotated pair: [K / 2]
    row_T, col_T = jnp.divmod(jnp.arange(h * w), w)
    theta_TK = jnp.concatenate(
        [row_T[:, None] * angle[None, :], col_T[:, None] * angle[None, :]], axis=-1
    )
    sin_1T1K, cos_1T1K = jnp.sin(theta_TK)[None, :, None], jnp.cos(theta_TK)[None, :, None]
    x = x_BTHK.astype(jnp.float32)
    x_even, x_odd = x[..., ::2], x[..., 1::2]
    rotated = jnp.stack([-x_odd, x_even], axis=-1).reshape(x.shape)  # (a, b) -> (-b, a)
    return x * cos_1T1K + rotated * sin_1T1K


def adaptive_pool_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[out, in] averaging weights of PyTorch's AdaptiveAvgPool1d (bins may overlap, or repeat
    when out > in): bin i averages [floor(i * in / out), ceil((i + 1) * in / out))."""
    m = np.zeros((size_out, size_in), np.float32)
    for i in range(size_out):
        lo, hi = (i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def linear_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[out, in] weights of PyTorch's linear/bilinear `interpolate(..., align_corners=False)`:
    source position (i + 0.5) * in / out - 0.5, clamped at 0, between its two neighbours."""
    m = np.zeros((size_out, size_in), np.float32)
    for i in range(size_out):
        src = max((i + 0.5) * size_in / size_out - 0.5, 0.0)
        lo = min(int(src), size_in - 1)
        hi, frac = min(lo + 1, size_in - 1), src - lo
        m[i, lo] += 1.0 - frac
        m[i, hi] += frac
    return m
