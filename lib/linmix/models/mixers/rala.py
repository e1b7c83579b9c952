"""RALA (Fan et al., CVPR 2025), rank-augmented linear attention. Non-causal reduction only.

Special (docs/mixers.md#rala): keys are re-weighted by a softmax against the mean query of the
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

from linmix.models.mixers.grid import rope_2d
from linmix.models.mixers.mala import MALA, MALAOptions


@dataclasses.dataclass(frozen=True)
class RALAOptions(MALAOptions):
    # qhfan/RALA classfication/RALA.py (docs/mixers.md#rala): MALA's defaults (2-D RoPE on the
    # numerator, 5 x 5 LePE, linear output gate, biased 1 x 1 projections, eps 1e-6).
    pass


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


class RALA(MALA):
    """Rank-augmented linear attention, RALA (Fan, Huang & He, CVPR 2025, arXiv:2411.07635).

    No engine: a global reduction (one einsum per head over the whole image). Keys are
    re-weighted by a softmax of their similarity to the mean query, then normalised linear
    attention (phi = elu + 1, RoPE on the numerator) runs on them; MALA's layer around it (LePE,
    linear gate x W_g, output projection). Bidirectional: the re-weighting needs every query, so
    no causal form exists; no cache; tokens are a row-major patch grid; RoPE and LePE make it
    position-dependent (not permutation-equivariant); packed segments are not supported.

    Options (MALA's, as in the released qhfan/RALA code; num_heads: `Mixer`):
        rope (True): 2-D rotary embedding on the numerator's q and k (head dim divisible by 4).
        lepe_size (5): odd kernel side of the LePE depthwise conv on v; 0 disables it.
        use_output_gate (True): multiply by the linear gate x W_g before the projection.
        eps (1e-6): added to the denominator.
        grid_height (0): rows of the patch grid; 0: square (T must be a perfect square).
    """

    name = "rala"
    Options = RALAOptions
    readout = staticmethod(rala_attention)
