"""Oracle for the (gated) delta rule: the literal per-token recurrence, everything in fp32.

Row convention (docs/notation.md), one head:

    S_t = a_t (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t,    o_t = scale * q_t S_t,

with a_t = exp(g_t) (a_t = 1 for DeltaNet, g = None) and the state reset to zero at the first
token of every packed segment. Each step is written as decay first, then the delta correction
(docs/forms.md): S <- a S; S <- S + beta k^T (v - k S). It is slow (one scan step per token)
and exists to check the chunked form, not to be used for training.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.common.chunks import segment_starts

_F32 = jnp.float32
_HIGHEST = jax.lax.Precision.HIGHEST


def delta_rule_reference(
    q_BTHK: jax.Array,
    k_BTHK: jax.Array,
    v_BTHV: jax.Array,
    beta_BTH: jax.Array,
    g_BTH: jax.Array | None,
    *,
    scale: float,
    initial_state: jax.Array | None,
    segment_ids: jax.Array | None,
) -> tuple[jax.Array, jax.Array]:
    """Causal recurrence, one `lax.scan` step per token. Returns (o [B,T,H,V] fp32, S [B,H,K,V])."""
    B, T, H, K = q_BTHK.shape
    V = v_BTHV.shape[-1]
    if g_BTH is None:
        g_BTH = jnp.zeros((B, T, H), _F32)
    starts_BT = segment_starts(segment_ids, B, T)
    S0_BHKV = jnp.zeros((B, H, K, V), _F32) if initial_state is None else initial_state

    def step(S_BHKV: jax.Array, xs: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        q_BHK, k_BHK, v_BHV, beta_BH, g_BH, start_B = xs
        S_BHKV = jnp.where(start_B[:, None, None, None], 0.0, S_BHKV)
        S_BHKV = jnp.exp(g_BH)[..., None, None] * S_BHKV
        kS_BHV = jnp.einsum("bhk,bhkv->bhv", k_BHK, S_BHKV, precision=_HIGHEST)
        u_BHV = beta_BH[..., None] * (v_BHV - kS_BHV)
        S_BHKV = S_BHKV + jnp.einsum("bhk,bhv->bhkv", k_BHK, u_BHV, precision=_HIGHEST)
        o_BHV = jnp.einsum("bhk,bhkv->bhv", q_BHK, S_BHKV, precision=_HIGHEST)
        return S_BHKV, o_BHV

    # Scan over time: put T first.
    xs = tuple(
        jnp.moveaxis(x.astype(_F32), 1, 0) for x in (q_BTHK, k_BTHK, v_BTHV, beta_BTH, g_BTH)
    ) + (jnp.moveaxis(starts_BT, 1, 0),)
    S_BHKV, o_TBHV = jax.lax.scan(step, S0_BHKV.astype(_F32), xs)
    return scale * jnp.moveaxis(o_TBHV, 0, 1), S_BHKV
