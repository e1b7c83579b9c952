"""Public entry point for softmax attention: input validation and dispatch."""

from __future__ import annotations

import jax

from linmix.ops.attention.reference import attention_reference
from linmix.ops.attention.xla import attention_xla
from linmix.ops.common.checks import check_float_dtypes, check_segment_ids, check_segment_order

IMPLEMENTATIONS = ("xla", "reference")


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    scale: float | None = None,
    segment_ids: jax.Array | None = None,
    causal: bool = True,
    window: int | None = None,
    implementation: str | None = None,
) -> jax.Array:
    """Softmax self-attention with grouped-query heads and packed-segment masking.

    Args:
      q: [B, T, H, D]. k: [B, T, Hkv, D]. v: [B, T, Hkv, Dv], with H % Hkv == 0; query head h
        reads kv head h // (H // Hkv).
      scale: multiplies the logits; defaults to D**-0.5.
      segment_ids: [B, T] integers; tokens attend only within their own segment.
      causal: restrict query t to keys s <= t.
      window: sliding window (causal only): query t sees keys t - window < s <= t.
      implementation: None or 'xla' (jax.nn.dot_product_attention, default) or 'reference'.

    Returns:
      o [B, T, H, Dv] in q.dtype.
    """
    impl = "xla" if implementation is None else implementation
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS} or None, got {impl!r}")
    _validate(q, k, v, segment_ids)
    if window is not None and (not causal or int(window) < 1):
        raise ValueError(f"window must be a positive int with causal=True, got {window!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    fn = attention_reference if impl == "reference" else attention_xla
    o_BTHV = fn(q, k, v, scale=scale, segment_ids=segment_ids, causal=causal, window=window)
    return o_BTHV.astype(q.dtype)


def _validate(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(f"{name} must have rank 4 [B, T, heads, dim], got shape {x.shape}")
    check_float_dtypes(q=q, k=k, v=v)
    B, T, H, D = q.shape
    Hkv = k.shape[2]
    if k.shape != (B, T, Hkv, D):
        raise ValueError(f"k must be [B, T, Hkv, D] with B, T, D of q {q.shape}, got {k.shape}")
    if v.shape[:3] != (B, T, Hkv):
        raise ValueError(f"v must be [B, T, Hkv, Dv] matching k {k.shape}, got {v.shape}")
    if H % Hkv != 0:
        raise ValueError(f"q heads ({H}) must be a multiple of k/v heads ({Hkv})")
    check_segment_ids(segment_ids, B, T)
    check_segment_order(segment_ids)
