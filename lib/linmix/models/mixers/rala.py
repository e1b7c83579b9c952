"""RALA (Fan et al., CVPR 2025), rank-augmented linear attention. Non-causal reduction only.

Special (MIXERS.md §5.2, §8.3): keys are re-weighted by a softmax against the mean query of the
whole image, so no causal recurrence exists. Per head, with phi = elu + 1, s = K^-1/2, N tokens:

    alpha_j  = softmax_j(s mean_i phi(q_i) . phi(k_j))          (KV-buffer rank augmentation)
    k'_j     = N alpha_j phi(k_j)
    o_i      = RoPE(phi(q_i)) [sum_j RoPE(k'_j)^T v_j / N] / (phi(q_i) . mean_j k'_j)

i.e. normalised linear attention on the re-weighted keys, RoPE (2-D, on the patch grid) in the
numerator only. Then + LePE (5 x 5 depthwise conv of v; output-feature rank augmentation), times
the linear gate x W_o, and the output projection, as qhfan/RALA `GateLinearAttentionNoSilu`.
Bidirectional: tokens form a row-major patch grid, square unless `grid_height` is set (a
non-square T raises ValueError); RoPE and LePE make it position-dependent, so it is not
permutation-equivariant. Packed segments are not supported.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.grid import DepthwiseConv2d, grid_shape, rope_2d
from linmix.models.mixers.mala import check_vision_options


@dataclasses.dataclass(frozen=True)
class RALAOptions(Options):
    # qhfan/RALA classfication/RALA.py (MIXERS.md §5.2): 2-D RoPE on the numerator, 5 x 5 LePE,
    # linear output gate, biased 1 x 1 projections, eps 1e-6 in the denominator.
    rope: bool = True
    lepe_size: int = 5  # odd kernel side of the depthwise conv on v; 0 disables it
    use_output_gate: bool = True
    eps: float = 1e-6
    grid_height: int = 0  # rows of the patch grid; 0: square (T must be a perfect square)


def rala_attention(q_BTHK, k_BTHK, v_BTHV, grid, *, scale, rope, eps):
    """The RALA read-out in fp32 from raw q, k (phi applied here): o [B, T, H, V]."""
    q_BTHK, k_BTHK = (jax.nn.elu(y.astype(jnp.float32)) + 1.0 for y in (q_BTHK, k_BTHK))
    v_BTHV = v_BTHV.astype(jnp.float32)
    n = q_BTHK.shape[1]
    logit_BTH = scale * jnp.einsum("bhk,bthk->bth", q_BTHK.mean(axis=1), k_BTHK)
    alpha_BTH = jax.nn.softmax(logit_BTH, axis=1)  # over the tokens: the global query's focus
    k_BTHK = k_BTHK * (alpha_BTH * n)[..., None]
    den_BTH = jnp.einsum("bthk,bhk->bth", q_BTHK, k_BTHK.mean(axis=1)) + eps
    if rope:
        q_BTHK, k_BTHK = rope_2d(q_BTHK, *grid), rope_2d(k_BTHK, *grid)
    kv_BHKV = jnp.einsum("bthk,bthv->bhkv", k_BTHK, v_BTHV) / n
    return jnp.einsum("bthk,bhkv->bthv", q_BTHK, kv_BHKV) / den_BTH[..., None]


class RALA(Mixer, nnx.Module):
    name = "rala"
    Options = RALAOptions
    causal = False
    permutation_equivariant = False  # RoPE and LePE see the grid positions

    @classmethod
    def check(cls, cfg, opts) -> None:
        super().check(cfg, opts)
        check_vision_options(cls.name, cfg, opts)

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.options_from(cfg)
        dtype = self.compute_dtype(cfg)
        d = cfg.d_model
        self.num_heads = o.num_heads or cfg.num_heads
        self.rope, self.eps, self.grid_height = o.rope, o.eps, o.grid_height
        # The official qkvo / proj are biased 1 x 1 convs: per-token linear maps with bias.
        self.q, self.k, self.v = (dense(d, d, rngs=rngs, dtype=dtype, use_bias=True) for _ in "qkv")
        gate = dense(d, d, rngs=rngs, dtype=dtype, use_bias=True)
        self.gate = gate if o.use_output_gate else None
        self.lepe = DepthwiseConv2d(d, o.lepe_size, rngs=rngs) if o.lepe_size else None
        self.proj = dense(d, d, rngs=rngs, dtype=dtype, use_bias=True)

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        if segment_ids is not None:
            raise ValueError(f"mixer {self.name!r}: packed segments are not supported (one grid)")
        b, t, d = x_BTD.shape
        grid = grid_shape(self.name, t, self.grid_height)
        h = self.num_heads
        q, k, v_BTD = self.q(x_BTD), self.k(x_BTD), self.v(x_BTD)
        o_BTHV = rala_attention(
            q.reshape(b, t, h, -1),
            k.reshape(b, t, h, -1),
            v_BTD.reshape(b, t, h, -1),
            grid,
            scale=(d // h) ** -0.5,
            rope=self.rope,
            eps=self.eps,
        )
        y_BTD = o_BTHV.reshape(b, t, d).astype(x_BTD.dtype)
        if self.lepe is not None:
            y_BTD = y_BTD + self.lepe(v_BTD, *grid)
        if self.gate is not None:
            y_BTD = y_BTD * self.gate(x_BTD)
        return self.proj(y_BTD), None
