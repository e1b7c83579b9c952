"""Building blocks shared by mixers and the LM: projections, norms, GLU MLP, rotary, short conv."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.parallel.context import active
from linmix.parallel.halo import with_halo

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def dense(d_in: int, d_out: int, *, rngs: nnx.Rngs, dtype, use_bias: bool = False) -> nnx.Linear:
    """A projection with fp32 parameters computing in `dtype`."""
    return nnx.Linear(d_in, d_out, use_bias=use_bias, dtype=dtype, rngs=rngs)


def rms_norm(d: int, *, rngs: nnx.Rngs, dtype, eps: float = 1e-6) -> nnx.RMSNorm:
    return nnx.RMSNorm(d, epsilon=eps, dtype=dtype, rngs=rngs)


class GLUMLP(nnx.Module):
    """SwiGLU MLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, d_hidden: int, *, rngs: nnx.Rngs, dtype):
        self.gate = dense(d_model, d_hidden, rngs=rngs, dtype=dtype)
        self.up = dense(d_model, d_hidden, rngs=rngs, dtype=dtype)
        self.down = dense(d_hidden, d_model, rngs=rngs, dtype=dtype)

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        return self.down(jax.nn.silu(self.gate(x_BTD)) * self.up(x_BTD))


def positions(segment_ids_BT: jax.Array | None, batch: int, length: int) -> jax.Array:
    """Position of each token within its segment (restarting at every document start)."""
    t_T = jnp.arange(length, dtype=jnp.int32)
    if segment_ids_BT is None:
        return jnp.broadcast_to(t_T, (batch, length))
    is_start_BT = jnp.concatenate(
        [
            jnp.ones((batch, 1), bool),
            segment_ids_BT[:, 1:] != segment_ids_BT[:, :-1],
        ],
        axis=1,
    )
    start_BT = jax.lax.cummax(jnp.where(is_start_BT, t_T[None, :], 0), axis=1)
    return t_T[None, :] - start_BT


def rotary(x_BTHK: jax.Array, pos_BT: jax.Array, base: float = 10000.0) -> jax.Array:
    """Rotary position embedding on the last dim (split-halves convention), computed in fp32."""
    k = x_BTHK.shape[-1]
    half = k // 2
    freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = pos_BT[..., None].astype(jnp.float32) * freq[None, None, :]  # [B, T, K/2]
    cos = jnp.cos(angle)[:, :, None, :]
    sin = jnp.sin(angle)[:, :, None, :]
    x = x_BTHK.astype(jnp.float32)
    x1, x2, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], -1)
    return out.astype(x_BTHK.dtype)


def causal_conv(x_BTC: jax.Array, segment_ids_BT: jax.Array | None, kernel_WC: jax.Array):
    """y_t = sum_j kernel[j] * x_{t-j} over the U taps j < U, only over x_{t-j} in t's segment:
    x [B, T, D], kernel [U, D]."""
    w_U11D = kernel_WC[:, None, None, :]
    y_BTD = x_BTC * w_U11D[0]
    for j in range(1, kernel_WC.shape[0]):
        shifted_BTD = jnp.pad(x_BTC, ((0, 0), (j, 0), (0, 0)))[:, : x_BTC.shape[1]]
        if segment_ids_BT is not None:
            seg_prev_BT = jnp.pad(segment_ids_BT, ((0, 0), (j, 0)), constant_values=-1)
            same_BT = seg_prev_BT[:, : x_BTC.shape[1]] == segment_ids_BT
            shifted_BTD = jnp.where(same_BT[..., None], shifted_BTD, 0)
        y_BTD = y_BTD + shifted_BTD * w_U11D[j]
    return y_BTD


class ShortConv(nnx.Module):
    """Causal depthwise convolution of width w over time, reset at segment boundaries.

    y_t = sum_j w_j * x_{t-j} over j < w, counting only x_{t-j} in the same segment as t, so no
    information crosses a packed-document boundary.
    """

    def __init__(self, channels: int, width: int = 4, *, rngs: nnx.Rngs, dtype):
        scale = 1.0 / width
        init = jax.random.uniform(rngs.params(), (width, channels), minval=-scale, maxval=scale)
        self.kernel = nnx.Param(init.at[0].add(1.0))  # start near identity: a gentle mixer
        self.width = width
        self.dtype = dtype

    def __call__(self, x_BTC: jax.Array, segment_ids_BT: jax.Array | None = None) -> jax.Array:
        kernel_UD = self.kernel[...].astype(self.dtype)
        x_BTC = x_BTC.astype(self.dtype)
        sp = active()
        if sp is None:
            return causal_conv(x_BTC, segment_ids_BT, kernel_UD)
        # Sequence sharded: each shard also reads the previous shard's last width - 1 inputs.
        return with_halo(causal_conv, x_BTC, segment_ids_BT, self.width - 1, sp, kernel_UD)

    def init_cache(self, batch: int) -> jax.Array:
        """The decode cache: the last width - 1 inputs, zeros before the sequence starts."""
        return jnp.zeros((batch, self.width - 1, self.kernel.shape[1]), self.dtype)

    def extend(self, x_BTC: jax.Array, tail_BWC: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Continue a sequence whose last width - 1 inputs are `tail`: (y [B, T, D], new tail)."""
        w = self.width - 1
        xx_BTD = jnp.concatenate([tail_BWC.astype(self.dtype), x_BTC.astype(self.dtype)], axis=1)
        return self(xx_BTD)[:, w:], xx_BTD[:, xx_BTD.shape[1] - w :]
