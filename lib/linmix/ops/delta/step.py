"""One decode step of the (gated) delta rule (one token of the recurrence in `delta_rule`).

    S <- exp(g_t) S;    S <- S + beta_t k_t^T (v_t - k_t S);    o_t = scale * q_t S

(decay first, then the delta correction, docs/forms.md). Looping `delta_rule_step` over the
tokens of a sequence gives the outputs and final state of
`delta_rule(..., output_final_state=True)` (without segment_ids: reset the state yourself).
The cost is O(H K V) per token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.common.checks import check_float_dtypes, check_nonpositive
from linmix.ops.delta.normalize import l2_normalize

_F32 = jnp.float32
_HIGHEST = jax.lax.Precision.HIGHEST


def delta_rule_step(
    q_t: jax.Array,
    k_t: jax.Array,
    v_t: jax.Array,
    beta_t: jax.Array,
    g_t: jax.Array | None,
    state: jax.Array,
    *,
    scale: float | None = None,
    use_qk_l2norm: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Advance the state by one token and read it with the query.

    Args:
      q_t, k_t: [B, H, K]. v_t: [B, H, V].
      beta_t: [B, H] write strength. g_t: None (DeltaNet) or [B, H] log-decay (<= 0).
      state: [B, H, K, V], any float dtype (used in fp32).
      scale: multiplies the output; defaults to K**-0.5.
      use_qk_l2norm: L2-normalise q_t and k_t over K first (in fp32), as in `delta_rule`.

    Returns:
      (o_t [B, H, V] in q_t.dtype, new state [B, H, K, V] fp32).
    """
    _validate(q_t, k_t, v_t, beta_t, g_t, state)
    out_dtype = q_t.dtype
    scale = q_t.shape[-1] ** -0.5 if scale is None else scale
    if use_qk_l2norm:
        q_t, k_t = l2_normalize(q_t), l2_normalize(k_t)
    q_BHK, k_BHK, v_BHV = (x.astype(_F32) for x in (q_t, k_t, v_t))
    S_BHKV = state.astype(_F32)
    if g_t is not None:
        S_BHKV = jnp.exp(g_t.astype(_F32))[..., None, None] * S_BHKV
    kS_BHV = jnp.einsum("bhk,bhkv->bhv", k_BHK, S_BHKV, precision=_HIGHEST)
    u_BHV = beta_t.astype(_F32)[..., None] * (v_BHV - kS_BHV)
    S_BHKV = S_BHKV + jnp.einsum("bhk,bhv->bhkv", k_BHK, u_BHV, precision=_HIGHEST)
    o_BHV = scale * jnp.einsum("bhk,bhkv->bhv", q_BHK, S_BHKV, precision=_HIGHEST)
    return o_BHV.astype(out_dtype), S_BHKV


def _validate(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    g: jax.Array | None,
    state: jax.Array,
) -> None:
    """Shapes and dtypes always; gate values (<= 0) on eager calls and under
    `linmix.ops.checked`."""
    for name, x in (("q_t", q), ("k_t", k), ("v_t", v)):
        if x.ndim != 3:
            raise ValueError(f"{name} must have rank 3 [B, H, dim], got shape {x.shape}")
    check_float_dtypes(q_t=q, k_t=k, v_t=v, beta_t=beta, g_t=g, state=state)
    B, H, K = q.shape
    if k.shape != q.shape:
        raise ValueError(f"k_t must have the shape of q_t {q.shape} ([B, H, K]), got {k.shape}")
    if v.shape[:2] != (B, H):
        raise ValueError(f"v_t must be [B, H, V] = [{B}, {H}, V], got {v.shape}")
    V = v.shape[2]
    if beta.shape != (B, H):
        raise ValueError(f"beta_t must be [B, H] = {(B, H)}, got {beta.shape}")
    if g is not None and g.shape != (B, H):
        raise ValueError(f"g_t must be None or [B, H] = {(B, H)}, got {g.shape}")
    if state.shape != (B, H, K, V):
        raise ValueError(f"state must be [B, H, K, V] = {(B, H, K, V)}, got {state.shape}")
    if not jnp.issubdtype(state.dtype, jnp.floating):
        raise ValueError(f"state must have a float dtype, got {state.dtype}")
    check_nonpositive("g_t", g)
