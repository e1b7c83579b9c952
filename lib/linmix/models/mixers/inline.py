"""InLine (Han et al., NeurIPS 2024), injective linear attention. Non-causal reduction + DW conv.

A global reduction: one global state per head, no scan, no engine call
(docs/mixers.md#global-reductions).
Per head, with phi the kernel function (identity by default), s = K^-1/2 and N tokens, the
weights are InL_ij = (s/N) phi(q_i).phi(k_j) - (s/N^2) sum_m phi(q_i).phi(k_m) + 1/N: they sum
to 1 with no division, and the map q -> weights is injective. As a reduction:

    o_i = phi(q_i) [sum_j (s/N) phi(k_j)^T v_j] + (1 - s phi(q_i) . mean_j phi(k_j)) mean_j v_j

Local term: + a 3 x 3 depthwise conv of v whose kernel is predicted per image from mean_t(x) by
a head-grouped MLP (1 x 1 grouped Conv1d D -> D, GELU, D -> 9D). Then the output projection, as
LeapLabTHU/InLine `InLineAttention` (no class token here: every token is a patch). Bidirectional:
tokens form a row-major patch grid, square unless `grid_height` is set (a non-square T raises
ValueError); the conv makes it position-dependent, so it is not permutation-equivariant.
Packed segments are not supported.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.grid import check_grid_height, depthwise_conv2d, grid_shape

KERNEL_FUNCS = {
    "identity": lambda x: x,
    "relu": jax.nn.relu,
    "leakyrelu": lambda x: jax.nn.leaky_relu(x, 0.01),  # PyTorch's default slope
    "exp": lambda x: jnp.exp(0.2 * x),  # official `exp_kernel`, t = 0.2
}


@dataclasses.dataclass(frozen=True)
class InLineOptions(Options):
    # LeapLabTHU/InLine models/inline_{deit,swin}.py (docs/mixers.md#inline): identity kernel
    # function, the dynamic 3 x 3 residual conv, biased q/k/v and output projections.
    kernel_func: str = "identity"  # one of KERNEL_FUNCS
    local_conv: bool = True  # the dynamic depthwise conv on v
    grid_height: int = 0  # rows of the patch grid; 0: square (T must be a perfect square)


def inline_attention(q_BTHK, k_BTHK, v_BTHV, *, scale):
    """The InLine read-out in fp32 from feature-mapped q, k: o [B, T, H, V]."""
    q_BTHK, k_BTHK, v_BTHV = (y.astype(jnp.float32) for y in (q_BTHK, k_BTHK, v_BTHV))
    n = q_BTHK.shape[1]
    kv_BHKV = jnp.einsum("bthk,bthv->bhkv", k_BTHK, v_BTHV) * (scale / n)
    qk_BTH = scale * jnp.einsum("bthk,bhk->bth", q_BTHK, k_BTHK.mean(axis=1))
    o_BTHV = jnp.einsum("bthk,bhkv->bthv", q_BTHK, kv_BHKV)
    return o_BTHV + (1.0 - qk_BTH)[..., None] * v_BTHV.mean(axis=1)[:, None]


class GroupedLinear(nnx.Module):
    """A 1 x 1 Conv1d with `groups` = heads: a block-diagonal linear map, one block per head."""

    def __init__(self, groups: int, d_in: int, d_out: int, *, rngs: nnx.Rngs):
        bound = (d_in // groups) ** -0.5  # PyTorch's default U(+-1/sqrt(fan_in)) per group
        shape = (groups, d_in // groups, d_out // groups)
        kernel = jax.random.uniform(rngs.params(), shape, minval=-bound, maxval=bound)
        self.kernel = nnx.Param(kernel)
        bias = jax.random.uniform(rngs.params(), (d_out,), minval=-bound, maxval=bound)
        self.bias = nnx.Param(bias)
        self.groups = groups

    def __call__(self, x_BD: jax.Array) -> jax.Array:
        b = x_BD.shape[0]
        x_BGD = x_BD.reshape(b, self.groups, -1)
        y_BGD = jnp.einsum("bgi,gio->bgo", x_BGD, self.kernel[...].astype(x_BD.dtype))
        return y_BGD.reshape(b, -1) + self.bias[...].astype(x_BD.dtype)[None]


class InLine(Mixer, nnx.Module):
    """Injective linear attention, InLine (Han, Pu, Xia, Han, Pan, Li, Lu, Song & Huang,
    NeurIPS 2024, arXiv:2412.06590).

    No engine: a global reduction (one einsum per head over the whole image). The weights
    (s/N) phi(q_i) . phi(k_j) - (s/N^2) sum_m phi(q_i) . phi(k_m) + 1/N sum to one without a
    division; a 3 x 3 depthwise conv of v, whose kernel an MLP predicts from the image mean, is
    added; then the output projection. Bidirectional: no cache; tokens are a row-major patch grid;
    the conv makes it position-dependent; packed segments are not supported.

    Options (defaults of the released LeapLabTHU/InLine code; num_heads: `Mixer`):
        kernel_func ("identity"): phi on q and k: "identity", "relu", "leakyrelu" (slope 0.01)
            or "exp" (exp(0.2 x)).
        local_conv (True): the predicted 3 x 3 depthwise conv on v.
        grid_height (0): rows of the patch grid; 0: square (T must be a perfect square).
    """

    name = "inline"
    Options = InLineOptions
    causal = False
    permutation_equivariant = False  # the 3 x 3 conv sees the grid positions

    @classmethod
    def check(cls, cfg, opts) -> None:
        super().check(cfg, opts)
        if opts.kernel_func not in KERNEL_FUNCS:
            raise ValueError(
                f"mixer 'inline': kernel_func {opts.kernel_func!r} not in {sorted(KERNEL_FUNCS)}"
            )
        check_grid_height(cls.name, opts.grid_height)

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.options_from(cfg)
        dtype = self.compute_dtype(cfg)
        d = cfg.d_model
        self.num_heads = h = o.num_heads or cfg.num_heads
        self.kernel_func, self.grid_height = o.kernel_func, o.grid_height
        self.q, self.k, self.v = (dense(d, d, rngs=rngs, dtype=dtype, use_bias=True) for _ in "qkv")
        if o.local_conv:  # kernel predictor: mean(x) -> 9 taps per channel
            self.kernel_in = GroupedLinear(h, d, d, rngs=rngs)
            self.kernel_out = GroupedLinear(h, d, 9 * d, rngs=rngs)
        else:
            self.kernel_in = self.kernel_out = None
        self.proj = dense(d, d, rngs=rngs, dtype=dtype, use_bias=True)

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        if segment_ids is not None:
            raise ValueError(f"mixer {self.name!r}: packed segments are not supported (one grid)")
        b, t, d = x_BTD.shape
        grid = grid_shape(self.name, t, self.grid_height)
        h = self.num_heads
        phi = KERNEL_FUNCS[self.kernel_func]
        q, k, v_BTD = phi(self.q(x_BTD)), phi(self.k(x_BTD)), self.v(x_BTD)
        o_BTHV = inline_attention(
            q.reshape(b, t, h, -1),
            k.reshape(b, t, h, -1),
            v_BTD.reshape(b, t, h, -1),
            scale=(d // h) ** -0.5,
        )
        y_BTD = o_BTHV.reshape(b, t, d).astype(x_BTD.dtype)
        if self.kernel_in is not None:
            hidden_BD = jax.nn.gelu(self.kernel_in(x_BTD.mean(axis=1)), approximate=False)
            # Channel c takes taps 9c .. 9c+8 (row-major 3 x 3), inside its head's group.
            w_BUUD = self.kernel_out(hidden_BD).reshape(b, d, 3, 3).transpose(0, 2, 3, 1)
            y_BTD = y_BTD + depthwise_conv2d(v_BTD, w_BUUD, *grid)
        return self.proj(y_BTD), None
