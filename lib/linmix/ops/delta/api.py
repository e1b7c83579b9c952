"""Public entry point for the (gated) delta rule: input validation and dispatch."""

from __future__ import annotations

import jax

from linmix.ops.common import contract
from linmix.ops.common.checks import (
    check_chunk_size,
    check_float_dtypes,
    check_float_state,
    check_nonpositive,
    check_segment_ids,
    check_segment_order,
)
from linmix.ops.common.contract import Capabilities, Tolerance
from linmix.ops.delta import pallas_mosaic_tpu, pallas_triton, reference, xla
from linmix.ops.delta.normalize import l2_normalize

_GATES = ("none", "scalar")
_16BIT = ("bfloat16", "float16")
_16BIT_TOL = {d: Tolerance(1e-2, 1e-2) for d in _16BIT}
# Every implementation of engine Δ and what it supports (the kernel contract). The Mosaic GPU
# and jax_triton forms run q, k, W and U in v's dtype, so q and k may differ from it.
CAPABILITIES = {
    "xla_chunked": Capabilities(gates=_GATES, normalize=False),
    "reference": Capabilities(gates=_GATES, normalize=False),
    "pallas_mosaic_tpu": Capabilities(
        gates=_GATES, normalize=False, kernel=True, native=("tpu",)
    ),
    "pallas_triton": Capabilities(gates=_GATES, normalize=False, kernel=True, native=("gpu",)),
    "pallas_mosaic_gpu": Capabilities(
        dtypes=_16BIT, gates=_GATES, normalize=False, max_key_dim=128, chunk_sizes=(64,),
        kernel=True, native=("gpu",), tolerance=_16BIT_TOL,
    ),
    "jax_triton": Capabilities(
        gates=_GATES, normalize=False, max_key_dim=256, kernel=True, native=("gpu",),
        tolerance={"float32": Tolerance(1e-4, 1e-4), **_16BIT_TOL},
    ),
}  # fmt: skip
IMPLEMENTATIONS = tuple(CAPABILITIES)
_FORMS = {
    "xla_chunked": xla.delta_rule_chunked,
    "reference": reference.delta_rule_reference,
    "pallas_mosaic_tpu": pallas_mosaic_tpu.delta_rule_pallas_mosaic_tpu,
    "pallas_triton": pallas_triton.delta_rule_pallas_triton,
    "pallas_mosaic_gpu": lambda *a, **kw: _pallas_mosaic_gpu()(*a, **kw),
    "jax_triton": lambda *a, **kw: _jax_triton()(*a, **kw),
}
DEFAULT_IMPLEMENTATION = {"tpu": "pallas_mosaic_tpu"}


def _pallas_mosaic_gpu():
    from linmix.ops.delta.pallas_mosaic_gpu import delta_rule_pallas_mosaic_gpu  # Mosaic GPU

    return delta_rule_pallas_mosaic_gpu


def _jax_triton():
    from linmix.ops.delta.jax_triton import delta_rule_jax_triton  # Triton loads on demand

    return delta_rule_jax_triton


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
    """Gated delta rule, row convention (docs/engines.md):

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
      implementation: None (the backend's best: `DEFAULT_IMPLEMENTATION`, else 'xla_chunked'),
        'xla_chunked' (chunked WY / UT form; custom backward that stores no per-token state),
        'pallas_mosaic_tpu' / 'pallas_triton' (the chunked form as fused Pallas kernels lowered
        to Mosaic TPU / to Triton, forward and backward; interpret mode on CPU),
        'pallas_mosaic_gpu' (WY transform in XLA, the state recurrence in the Mosaic GPU
        kernels; bf16 / f16 v, K <= 128), 'jax_triton' (the same on the jax_triton kernels;
        Triton's interpreter on CPU) or 'reference' (per-token scan). `CAPABILITIES` declares
        what each supports; a call outside it is a ValueError naming the missing capability.

    Returns:
      (o, final_state): o [B, T, H, V] in q.dtype; final_state [B, H, K, V] fp32, or None when
      output_final_state is False.
    """
    _validate(q, k, v, beta, g, initial_state, segment_ids, chunk_size)
    request = contract.Request(
        # the 16-bit kernels use q, k in v's dtype: v's dtype is what they must support
        dtypes=(contract.dtype_name(v),),
        gate=contract.gate_kind(g),
        segments=segment_ids is not None,
        states=initial_state is not None or output_final_state,
        key_dim=q.shape[-1],
        value_dim=v.shape[-1],
    )
    impl = contract.select("delta", CAPABILITIES, implementation, request, DEFAULT_IMPLEMENTATION)
    out_dtype = q.dtype
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if use_qk_l2norm:
        q, k = l2_normalize(q), l2_normalize(k)
    extra = {} if impl == "reference" else {"chunk_size": chunk_size}
    if CAPABILITIES[impl].kernel:  # on a CPU backend: interpret mode
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
    """Shapes and dtypes always; values (g <= 0, sorted ids) on eager calls and under
    `linmix.ops.checked` (skipped under plain jit)."""
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
    check_float_dtypes(q=q, k=k, v=v, beta=beta, g=g)
    check_float_state(initial_state, (B, H, K, V), "[B, H, K, V]")
    check_segment_ids(segment_ids, B, T)
    check_nonpositive("g", g)
    check_segment_order(segment_ids)
    check_chunk_size(chunk_size)
