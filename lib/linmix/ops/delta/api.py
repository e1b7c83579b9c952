"""Public entry point for the (gated) delta rule: input validation and dispatch."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.checks import (
    check_chunk_size,
    check_float_state,
    check_nonpositive,
    check_segment_ids,
    check_segment_order,
)
from linmix.ops.delta import pallas_gpu, pallas_tpu, reference, xla
from linmix.ops.delta.normalize import l2_normalize
from linmix.ops.gla.api import default_implementation

IMPLEMENTATIONS = ("xla", "reference", "pallas_tpu", "pallas_gpu", "mosaic_gpu", "triton")
_FORMS = {
    "xla": xla.delta_rule_chunked,
    "reference": reference.delta_rule_reference,
    "pallas_tpu": pallas_tpu.delta_rule_pallas_tpu,
    "pallas_gpu": pallas_gpu.delta_rule_pallas_gpu,
    "mosaic_gpu": lambda *a, **kw: _mosaic_gpu()(*a, **kw),
    "triton": lambda *a, **kw: _triton()(*a, **kw),
}

_KERNELS = ("pallas_tpu", "pallas_gpu", "mosaic_gpu", "triton")


def _mosaic_gpu():
    from linmix.ops.delta.mosaic_gpu import delta_rule_mosaic_gpu  # Mosaic GPU loads on demand

    return delta_rule_mosaic_gpu


def _triton():
    from linmix.ops.delta.triton import delta_rule_triton  # Triton loads on demand

    return delta_rule_triton


def delta_rule(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    g: jax.Array | None = None,
    *,
    scale: float | None = None,
    initial_state: jax.Array | None = None,
    output_final_state: bool = False,
    segment_ids: jax.Array | None = None,
    chunk_size: int = 64,
    use_qk_l2norm: bool = False,
    implementation: str | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """Gated delta rule, row convention (MIXERS.md §2.6, §2.7):

        S_t = exp(g_t) (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t,  o_t = scale * q_t S_t.

    Args:
      q, k: [B, T, H, K]. v: [B, T, H, V] (V may differ from K).
      beta: [B, T, H] write strength, usually in (0, 1) ((0, 2) allows negative eigenvalues).
        The recurrence is only stable for unit-norm keys: see use_qk_l2norm.
      g: None (DeltaNet, no decay) or [B, T, H] log-decay (<= 0) per head (Gated DeltaNet).
      scale: multiplies the output; defaults to K**-0.5.
      initial_state: [B, H, K, V], any float dtype (used in fp32); feeds the first segment only.
      output_final_state: return the fp32 [B, H, K, V] state after the last token (that is, the
        state of the last segment).
      segment_ids: [B, T] integers, non-decreasing along T (packed documents). The state is reset
        to zero wherever the id changes, so tokens only see their own document.
      chunk_size: chunk length of the chunked algorithm; a positive power of two.
      use_qk_l2norm: L2-normalise q and k over K (in fp32, differentiably) before anything else,
        as DeltaNet and Gated DeltaNet do.
      implementation: None (the backend's best, `linmix.ops.gla.default_implementation`), 'xla'
        (chunked WY / UT form; custom backward that stores no per-token state), 'pallas_tpu' /
        'pallas_gpu' (the chunked form as fused Pallas kernels, forward and backward; interpret
        mode on CPU), 'mosaic_gpu' (WY transform in XLA, the state recurrence in the Mosaic GPU
        kernels of engine L; bf16 / f16 v, no or scalar gates), 'triton' (the same on engine L's
        Triton kernels through jax_triton; Triton's interpreter on CPU) or 'reference'
        (per-token scan).

    Returns:
      (o, final_state): o [B, T, H, V] in q.dtype; final_state [B, H, K, V] fp32, or None when
      output_final_state is False.
    """
    impl = default_implementation() if implementation is None else implementation
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS} or None, got {impl!r}")
    _validate(q, k, v, beta, g, initial_state, segment_ids, chunk_size)
    out_dtype = q.dtype
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if use_qk_l2norm:
        q, k = l2_normalize(q), l2_normalize(k)
    extra = {} if impl == "reference" else {"chunk_size": chunk_size}
    if impl in _KERNELS:  # on a CPU backend: interpret mode
        extra["interpret"] = jax.default_backend() == "cpu"
    o_BTHV, S_BHKV = _FORMS[impl](
        q,
        k,
        v,
        beta,
        g,
        scale=scale,
        initial_state=initial_state,
        segment_ids=segment_ids,
        **extra,
    )
    return o_BTHV.astype(out_dtype), (S_BHKV if output_final_state else None)


def _validate(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    g: jax.Array | None,
    initial_state: jax.Array | None,
    segment_ids: jax.Array | None,
    chunk_size: int,
) -> None:
    """Shapes and dtypes always; values (g <= 0, sorted ids) on eager calls only (a traced
    value can't be inspected under jit)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(f"{name} must have rank 4 [B, T, H, dim], got shape {x.shape}")
    B, T, H, K = q.shape
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {q.shape} ([B, T, H, K]), got {k.shape}")
    if v.shape[:3] != (B, T, H):
        raise ValueError(f"v must be [B, T, H, V] = [{B}, {T}, {H}, V], got {v.shape}")
    V = v.shape[3]
    if beta.shape != (B, T, H):
        raise ValueError(f"beta must be [B, T, H] = {(B, T, H)}, got {beta.shape}")
    if g is not None and g.shape != (B, T, H):
        raise ValueError(
            f"g must be None or a per-head log-decay [B, T, H] = {(B, T, H)}, got {g.shape}"
        )
    for name, x in (("q", q), ("k", k), ("v", v), ("beta", beta), ("g", g)):
        if x is not None and not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{name} must have a float dtype, got {x.dtype}")
    check_float_state(initial_state, (B, H, K, V), "[B, H, K, V]")
    check_segment_ids(segment_ids, B, T)
    check_nonpositive("g", g)
    check_segment_order(segment_ids)
    check_chunk_size(chunk_size)
