"""One decode step of gated linear attention (one token of the recurrence in `gla`).

    S <- diag(exp(g_t)) S + k_t^T v_t,    o_t = scale * q_t S

Looping `gla_step` over the tokens of a sequence gives the outputs and final state of
`gla(..., output_final_state=True)` (without segment_ids: reset the state yourself).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.common.checks import check_float_dtypes, check_nonpositive
from linmix.ops.gla import features

_F32 = jnp.float32
_HIGHEST = jax.lax.Precision.HIGHEST


def gla_step(
    q_t: jax.Array,
    k_t: jax.Array,
    v_t: jax.Array,
    g_t: jax.Array | None,
    state: jax.Array,
    *,
    scale: float | None = None,
    normalize: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Advance the state by one token and read it with the query.

    Args:
      q_t, k_t: [B, H, K]. v_t: [B, H, V].
      g_t: log-decay (<= 0): None (no decay), [B, H] (scalar per head) or [B, H, K].
      state: [B, H, K, V], any float dtype (used in fp32).
      scale: multiplies the output; defaults to K**-0.5.
      normalize: as in `gla`: the state is [B, H, K, V + 1] with the key sum z as its last
        column, and the output is divided by scale * q_t . z_t.

    Returns:
      (o_t [B, H, V] in q_t.dtype, new state [B, H, K, V] fp32).
    """
    check_float_dtypes(q_t=q_t, k_t=k_t, v_t=v_t, g_t=g_t, state=state)
    if normalize:
        v_t = features.with_denominator(v_t)
    _validate(q_t, k_t, v_t, g_t, state)
    scale = q_t.shape[-1] ** -0.5 if scale is None else scale
    S_BHKV = state.astype(_F32)
    if g_t is not None:
        a = jnp.exp(g_t.astype(_F32))
        a_BHX1 = a[..., None, None] if g_t.ndim == 2 else a[..., None]
        S_BHKV = a_BHX1 * S_BHKV
    kv_BHKV = jnp.einsum("bhk,bhv->bhkv", k_t.astype(_F32), v_t.astype(_F32), precision=_HIGHEST)
    S_BHKV = S_BHKV + kv_BHKV
    o_BHV = jnp.einsum("bhk,bhkv->bhv", q_t.astype(_F32), S_BHKV, precision=_HIGHEST)
    o_BHV = scale * o_BHV
    if normalize:
        o_BHV = features.divide_by_denominator(o_BHV)
    return o_BHV.astype(q_t.dtype), S_BHKV


def _validate(
    q: jax.Array, k: jax.Array, v: jax.Array, g: jax.Array | None, state: jax.Array
) -> None:
    """Shapes and dtypes always; gate values (<= 0) on eager calls and under
    `linmix.ops.checked`."""
    for name, x in (("q_t", q), ("k_t", k), ("v_t", v)):
        if x.ndim != 3:
            raise ValueError(f"{name} must have rank 3 [B, H, dim], got shape {x.shape}")
    B, H, K = q.shape
    if k.shape != q.shape:
        raise ValueError(f"k_t must have the shape of q_t {q.shape} ([B, H, K]), got {k.shape}")
    if v.shape[:2] != (B, H):
        raise ValueError(f"v_t must be [B, H, V] = [{B}, {H}, V], got {v.shape}")
    V = v.shape[2]
    if g is not None and g.shape not in ((B, H), (B, H, K)):
        raise ValueError(
            f"g_t must be None, [B, H] = {(B, H)} or [B, H, K] = {(B, H, K)}, got {g.shape}"
        )
    if state.shape != (B, H, K, V):
        raise ValueError(f"state must be [B, H, K, V] = {(B, H, K, V)}, got {state.shape}")
    if not jnp.issubdtype(state.dtype, jnp.floating):
        raise ValueError(f"state must have a float dtype, got {state.dtype}")
    check_nonpositive("g_t", g)
