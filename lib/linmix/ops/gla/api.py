"""Public entry point for gated linear attention: input validation and dispatch."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.common import contract
from linmix.ops.common.checks import (
    check_chunk_size,
    check_float_dtypes,
    check_nonpositive,
    check_segment_ids,
    check_segment_order,
)
from linmix.ops.common.contract import Capabilities, Tolerance
from linmix.ops.gla import features, pallas_mosaic_tpu, pallas_triton, reference, scan, xla

_16BIT = ("bfloat16", "float16")
# Every implementation of engine L and what it supports (the kernel contract).
CAPABILITIES = {
    "xla_chunked": Capabilities(bidirectional=True),
    "associative_scan": Capabilities(bidirectional=True),
    "reference": Capabilities(bidirectional=True),
    "pallas_mosaic_tpu": Capabilities(bidirectional=True, kernel=True, native=("tpu",)),
    "pallas_triton": Capabilities(bidirectional=True, kernel=True, native=("gpu",)),
    "pallas_mosaic_gpu": Capabilities(
        dtypes=_16BIT, mixed_dtypes=False, bidirectional=True, max_key_dim=128,
        chunk_sizes=(64,), kernel=True, native=("gpu",),
        tolerance={d: Tolerance(1e-2, 1e-2) for d in _16BIT},
    ),
    "jax_triton": Capabilities(
        mixed_dtypes=False, bidirectional=True, max_key_dim=256, kernel=True, native=("gpu",),
        tolerance={"float32": Tolerance(1e-4, 1e-4), **{d: Tolerance(1e-2, 1e-2) for d in _16BIT}},
    ),
}  # fmt: skip
IMPLEMENTATIONS = tuple(CAPABILITIES)
_CAUSAL_FORMS = {
    "xla_chunked": xla.gla_chunked,
    "associative_scan": scan.gla_associative_scan,
    "reference": reference.gla_reference,
    "pallas_mosaic_tpu": pallas_mosaic_tpu.gla_pallas_mosaic_tpu,
    "pallas_triton": pallas_triton.gla_pallas_triton,
    "pallas_mosaic_gpu": lambda *a, **kw: _pallas_mosaic_gpu()(*a, **kw),
    "jax_triton": lambda *a, **kw: _jax_triton()(*a, **kw),
}
# What implementation=None runs on each backend. The GPU kernels are opt-in (implementation=
# "pallas_triton" / "pallas_mosaic_gpu" / "jax_triton") until `pytest -m gpu` has passed on the
# hardware in use.
DEFAULT_IMPLEMENTATION = {"tpu": "pallas_mosaic_tpu"}


def _pallas_mosaic_gpu():
    from linmix.ops.gla.pallas_mosaic_gpu import gla_pallas_mosaic_gpu  # loads Mosaic GPU

    return gla_pallas_mosaic_gpu


def _jax_triton():
    from linmix.ops.gla.jax_triton import gla_jax_triton  # Triton loads on demand

    return gla_jax_triton


def default_implementation(backend: str | None = None) -> str:
    """The implementation `implementation=None` selects on `backend` (default: JAX's)."""
    return DEFAULT_IMPLEMENTATION.get(backend or jax.default_backend(), "xla_chunked")


def gla(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array | None = None,
    *,
    scale: float | None = None,
    initial_state: jax.Array | None = None,
    output_final_state: bool = False,
    segment_ids: jax.Array | None = None,
    causal: bool = True,
    normalize: bool = False,
    chunk_size: int = 64,
    implementation: str | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """Gated linear attention: S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t, o_t = scale * q_t S_t.

    Args:
      q, k: [B, T, H, K]. v: [B, T, H, V] (V may differ from K).
      g: log-decay (<= 0). None (no decay), [B, T, H] (one scalar per head) or [B, T, H, K]
        (per key channel).
      scale: multiplies the output; defaults to K**-0.5.
      initial_state: [B, H, K, V], any float dtype (used in fp32); feeds the first segment only.
        Not allowed with causal=False.
      output_final_state: return the fp32 [B, H, K, V] state after the last token (that is, the
        state of the last segment). Not allowed with causal=False.
      segment_ids: [B, T] integers, non-decreasing along T (packed documents). The state is reset
        to zero wherever the id changes, so tokens only see their own document.
      normalize: divide each output by its denominator scale * q_t . z_t, z_t the equally decayed
        sum of the keys (normalised linear attention; needs q_t . k_s >= 0, i.e. positive
        feature maps, see `linmix.ops.gla.features`). The state then carries z_t as an extra
        last column: initial_state and final_state are [B, H, K, V + 1].
      causal: False gives the bidirectional form, where query t sees every key s of its segment
        with weight prod of a_j over the tokens strictly after min(s, t) up to max(s, t).
      chunk_size: chunk length of the chunked algorithm; a positive power of two.
      implementation: None (the backend's best: `default_implementation()`), 'xla_chunked'
        (chunked XLA, custom backward that stores no per-token state), 'pallas_mosaic_tpu' /
        'pallas_triton' (the chunked form as fused Pallas kernels lowered to Mosaic TPU / to
        Triton, forward and backward; interpret mode on CPU), 'pallas_mosaic_gpu' (Pallas
        lowered to Mosaic GPU, wgmma products: bf16 / f16 q, k, v, K <= 128; per-channel gates
        as a kernel state pass after XLA's intra-chunk parts; Pallas' GPU interpreter on CPU),
        'jax_triton' (Triton kernels through jax_triton: bf16 / f16 / fp32, K <= 256; Triton's
        interpreter on CPU), 'associative_scan' (parallel prefix scan over per-token K x V
        states: small states only, refused above `scan.MAX_STATE_BYTES`) or 'reference'
        (per-token scan). `CAPABILITIES` declares what each supports; a call outside it is a
        ValueError naming the missing capability and the implementations that have it.

    Returns:
      (o, final_state): o [B, T, H, V] in q.dtype; final_state [B, H, K, V] fp32, or None when
      output_final_state is False (always None for causal=False).
    """
    _validate(q, k, v, g, initial_state, segment_ids, chunk_size, normalize)
    request = contract.Request(
        dtypes=tuple(contract.dtype_name(x) for x in (q, k, v)),
        gate=contract.gate_kind(g),
        segments=segment_ids is not None,
        states=initial_state is not None or output_final_state,
        bidirectional=not causal,
        normalize=normalize,
        key_dim=q.shape[-1],
        value_dim=v.shape[-1] + int(normalize),
    )
    impl = contract.select("gla", CAPABILITIES, implementation, request, DEFAULT_IMPLEMENTATION)
    if not causal and (output_final_state or initial_state is not None):
        raise ValueError(
            "causal=False has no recurrent state: initial_state and output_final_state=True "
            "are not supported with it"
        )
    scale = q.shape[-1] ** -0.5 if scale is None else scale

    if normalize:
        v = features.with_denominator(v)
    form = _CAUSAL_FORMS[impl]
    caps = CAPABILITIES[impl]
    extra = {} if impl in ("reference", "associative_scan") else {"chunk_size": chunk_size}
    if caps.kernel:  # a kernel asked for on a CPU backend runs in interpret mode
        extra["interpret"] = jax.default_backend() == "cpu"
    if not causal:
        if impl == "reference":
            o_BTHV = reference.gla_bidirectional_reference(
                q, k, v, g, scale=scale, segment_ids=segment_ids
            )
        else:
            o_BTHV = xla.bidirectional(
                form, q, k, v, g, scale=scale, segment_ids=segment_ids, **extra
            )
        return _finish(o_BTHV, q.dtype, normalize), None

    o_BTHV, S_BHKV = form(
        q,
        k,
        v,
        g,
        scale=scale,
        initial_state=initial_state,
        segment_ids=segment_ids,
        **extra,
    )
    return _finish(o_BTHV, q.dtype, normalize), (S_BHKV if output_final_state else None)


def _finish(o_BTHV: jax.Array, dtype: jnp.dtype, normalize: bool) -> jax.Array:
    """The fp32 output in the input dtype, divided by its denominator column first if asked."""
    if normalize:
        o_BTHV = features.divide_by_denominator(o_BTHV)
    return o_BTHV.astype(dtype)


def _validate(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    g: jax.Array | None,
    initial_state: jax.Array | None,
    segment_ids: jax.Array | None,
    chunk_size: int,
    normalize: bool = False,
) -> None:
    """Shapes and dtypes always; values (g <= 0, sorted ids) on eager calls and under
    `linmix.ops.checked` (skipped under plain jit)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(f"{name} must have rank 4 [B, T, H, dim], got shape {x.shape}")
    check_float_dtypes(q=q, k=k, v=v, g=g, initial_state=initial_state)
    B, T, H, K = q.shape
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {q.shape} ([B, T, H, K]), got {k.shape}")
    if v.shape[:3] != (B, T, H):
        raise ValueError(f"v must be [B, T, H, V] = [{B}, {T}, {H}, V], got {v.shape}")
    V = v.shape[3] + int(normalize)
    if g is not None and g.shape not in ((B, T, H), (B, T, H, K)):
        raise ValueError(
            f"g must be None, [B, T, H] = {(B, T, H)} or [B, T, H, K] = {(B, T, H, K)}, "
            f"got {g.shape}"
        )
    if initial_state is not None and initial_state.shape != (B, H, K, V):
        raise ValueError(
            f"initial_state must be [B, H, K, V{' + 1' if normalize else ''}] = {(B, H, K, V)}, "
            f"got {initial_state.shape}"
        )
    check_segment_ids(segment_ids, B, T)
    check_nonpositive("g", g)
    check_segment_order(segment_ids)
    check_chunk_size(chunk_size)
