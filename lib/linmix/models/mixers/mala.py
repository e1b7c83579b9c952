"""MALA (Fan et al., ICCV 2025), magnitude-aware linear attention. Non-causal reduction + scalars.

A global reduction: one global state per head, no scan, no engine call
(docs/mixers.md#global-reductions).

Per head, with phi = elu + 1, s = K^-1/2, N tokens and RoPE the 2-D rotary embedding of the patch
grid (applied to the numerator only):

    z_i = s phi(q_i) . mean_j phi(k_j)                       (before RoPE)
    o_i = RoPE(phi(q_i)) [sum_j (s/N) RoPE(phi(k_j))^T v_j] (1 + 1/z_i) - z_i mean_j v_j

i.e. attention weights a_ij = (1 + 1/z_i) kappa_ij - z_i / N with kappa_ij = (s/N) phi(q_i) .
phi(k_j) (RoPE'd in the code): without RoPE they sum to 1; they may be negative and sharpen as
|phi(q_i)| grows (magnitude awareness).
Then + LePE (5 x 5 depthwise conv of v), times the linear gate x W_o, and the output projection,
as qhfan/MALA `AddLinearAttention`. Bidirectional: tokens form a row-major patch grid, square
unless `grid_height` is set (a non-square T raises ValueError); RoPE and LePE make it depend on
token positions, so it is not permutation-equivariant. Packed segments are not supported.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.grid import DepthwiseConv2d, check_grid_height, grid_shape, rope_2d


@dataclasses.dataclass(frozen=True)
class MALAOptions(Options):
    # qhfan/MALA classfication_release/model.py (docs/mixers.md#mala): 2-D RoPE on the numerator,
    # 5 x 5 LePE, linear output gate, biased 1 x 1 projections, eps 1e-6 in 1 / z.
    rope: bool = True
    lepe_size: int = 5  # odd kernel side of the depthwise conv on v; 0 disables it
    use_output_gate: bool = True
    eps: float = 1e-6
    grid_height: int = 0  # rows of the patch grid; 0: square (T must be a perfect square)


def check_vision_options(name: str, cfg, opts) -> None:
    """Checks shared by MALA and RALA: RoPE pairs, LePE size, grid."""
    head_k = cfg.d_model // (opts.num_heads or cfg.num_heads)
    if opts.rope and head_k % 4:
        raise ValueError(
            f"mixer {name!r}: 2-D RoPE needs a head dim divisible by 4 (rope=True), got {head_k}"
        )
    if opts.lepe_size < 0 or (opts.lepe_size and opts.lepe_size % 2 == 0):
        raise ValueError(f"mixer {name!r}: lepe_size must be 0 or odd, got {opts.lepe_size}")
    check_grid_height(name, opts.grid_height)


def mala_attention(q_BTHK, k_BTHK, v_BTHV, grid, *, scale, rope, eps):
    """The MALA read-out in fp32 from raw q, k (phi applied here): o [B, T, H, V]."""
    q_BTHK, k_BTHK = (jax.nn.elu(y.astype(jnp.float32)) + 1.0 for y in (q_BTHK, k_BTHK))
    v_BTHV = v_BTHV.astype(jnp.float32)
    n = q_BTHK.shape[1]
    z_BTH = scale * jnp.einsum("bthk,bhk->bth", q_BTHK, k_BTHK.mean(axis=1))
    if rope:
        q_BTHK, k_BTHK = rope_2d(q_BTHK, *grid), rope_2d(k_BTHK, *grid)
    kv_BHKV = jnp.einsum("bthk,bthv->bhkv", k_BTHK, v_BTHV) * (scale / n)
    num_BTHV = jnp.einsum("bthk,bhkv->bthv", q_BTHK, kv_BHKV)
    beta_BTH1 = (1.0 + 1.0 / (z_BTH + eps))[..., None]
    return num_BTHV * beta_BTH1 - z_BTH[..., None] * v_BTHV.mean(axis=1)[:, None]


class MALA(Mixer, nnx.Module):
    """Magnitude-aware linear attention, MALA (Fan, Huang, Ai & He, ICCV 2025, arXiv:2507.00698).

    No engine: a global reduction (one einsum per head over the whole image). With phi = elu + 1,
    z_i = s phi(q_i) . mean_j phi(k_j) rescales the read-out, o_i = RoPE(phi(q_i)) KV (1 + 1/z_i)
    - z_i mean_j v_j, so the weights sum to one and sharpen as |phi(q_i)| grows; then + LePE
    (depthwise conv of v), times the linear gate x W_g, and the output projection.
    Bidirectional: no cache; tokens are a row-major patch grid; RoPE and LePE make it
    position-dependent (not permutation-equivariant); packed segments are not supported.

    Options (defaults of the released qhfan/MALA code; num_heads: `Mixer`):
        rope (True): 2-D rotary embedding on the numerator's q and k (head dim divisible by 4).
        lepe_size (5): odd kernel side of the LePE depthwise conv on v; 0 disables it.
        use_output_gate (True): multiply by the linear gate x W_g before the projection.
        eps (1e-6): added to z_i in 1 / z_i.
        grid_height (0): rows of the patch grid; 0: square (T must be a perfect square).
    """

    name = "mala"
    Options = MALAOptions
    causal = False
    permutation_equivariant = False  # RoPE and LePE see the grid positions
    readout = staticmethod(mala_attention)  # (q, k, v, grid, *, scale, rope, eps) -> o fp32

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
        o_BTHV = self.readout(
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
