"""Softmax attention of new queries over a fixed-size key/value cache (the decode path)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def attention_decode(
    q_BTHD: jax.Array,
    k_cache_BSGD: jax.Array,
    v_cache_BSGV: jax.Array,
    start: jax.Array,
    *,
    scale: float | None = None,
    window: int | None = None,
    key_positions: jax.Array | None = None,
) -> jax.Array:
    """Query t sits at position start + t and sees cached keys s <= start + t (and, with a
    window, s > start + t - window). The cache holds S slots, filled up to start + T.

    `key_positions` (int [S], optional) gives each slot's position in the sequence (-1: empty)
    when the slots are not positions 0..S-1 in order (a ring buffer of a sliding window).

    Returns o [B, T, H, V] in q's dtype; fp32 logits and softmax.
    """
    B, T, H, D = q_BTHD.shape
    S, G = k_cache_BSGD.shape[1], k_cache_BSGD.shape[2]
    scale = D**-0.5 if scale is None else scale
    q_BTGRD = q_BTHD.astype(jnp.float32).reshape(B, T, G, H // G, D)
    logits_BGRTS = scale * jnp.einsum(
        "btgrd,bsgd->bgrts", q_BTGRD, k_cache_BSGD.astype(jnp.float32), precision=_HIGHEST
    )
    pos_T1 = (start + jnp.arange(T))[:, None]
    key_1S = (jnp.arange(S) if key_positions is None else key_positions)[None, :]
    mask_TS = (key_1S >= 0) & (key_1S <= pos_T1)
    if window is not None:
        mask_TS = mask_TS & (key_1S > pos_T1 - window)
    logits_BGRTS = jnp.where(mask_TS, logits_BGRTS, -jnp.inf)
    p_BGRTS = jax.nn.softmax(logits_BGRTS, axis=-1)
    o_BTGRV = jnp.einsum(
        "bgrts,bsgv->btgrv", p_BGRTS, v_cache_BSGV.astype(jnp.float32), precision=_HIGHEST
    )
    return o_BTGRV.reshape(B, T, H, -1).astype(q_BTHD.dtype)
