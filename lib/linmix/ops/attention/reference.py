"""Oracle softmax attention: explicit fp32 logits and softmax at HIGHEST matmul precision."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.attention.masking import attention_mask

_HIGHEST = jax.lax.Precision.HIGHEST


def attention_reference(
    q_BTHD: jax.Array,
    k_BTHD: jax.Array,
    v_BTHV: jax.Array,
    *,
    scale: float,
    segment_ids: jax.Array | None,
    causal: bool,
    window: int | None = None,
) -> jax.Array:
    """Returns o [B, T, H, V] in fp32. k/v have Hkv heads; query head h reads kv head h // G."""
    B, T, H, D = q_BTHD.shape
    Hkv = k_BTHD.shape[2]
    G = H // Hkv
    Dv = v_BTHV.shape[-1]
    # Group query heads under their kv head: head h = kv * G + group.
    q_BTKGD = q_BTHD.astype(jnp.float32).reshape(B, T, Hkv, G, D)
    logits_BKGTS = scale * jnp.einsum(
        "btkgd,bskd->bkgts", q_BTKGD, k_BTHD.astype(jnp.float32), precision=_HIGHEST
    )
    mask_BTS = attention_mask(T, causal=causal, segment_ids=segment_ids, window=window)
    logits_BKGTS = jnp.where(mask_BTS[:, None, None], logits_BKGTS, -jnp.inf)
    p_BKGTS = jax.nn.softmax(logits_BKGTS, axis=-1)
    o_BTKGV = jnp.einsum(
        "bkgts,bskv->btkgv", p_BKGTS, v_BTHV.astype(jnp.float32), precision=_HIGHEST
    )
    return o_BTKGV.reshape(B, T, H, Dv)
