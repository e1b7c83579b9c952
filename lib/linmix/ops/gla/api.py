"""Public entry point for gated linear attention: input validation and dispatch."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.checks import (
    check_chunk_size,
    check_nonpositive,
    check_segment_ids,
    check_segment_order,
)
from linmix.ops.gla import features, pallas_gpu, pallas_tpu, reference, scan, xla

IMPLEMENTATIONS = (
    "xla", "associative_scan", "reference", "pallas_tpu", "pallas_gpu", "mosaic_gpu", "triton",
)  # fmt: skip
_CAUSAL_FORMS = {
    "xla": xla.gla_chunked,
    "associative_scan": scan.gla_associative_scan,
    "reference": reference.gla_reference,
    "pallas_tpu": pallas_tpu.gla_pallas_tpu,
    "pallas_gpu": pallas_gpu.gla_pallas_gpu,
    "mosaic_gpu": lambda *a, **kw: _mosaic_gpu()(*a, **kw),
    "triton": lambda *a, **kw: _triton()(*a, **kw),
}
_CHUNKED = ("xla", "pallas_tpu", "pallas_gpu", "mosaic_gpu", "triton")
_KERNELS = ("pallas_tpu", "pallas_gpu", "mosaic_gpu", "triton")
# What implementation=None runs on each backend. The GPU kernels are opt-in (implementation=
# "pallas_gpu" / "mosaic_gpu" / "triton") until `pytest -m gpu` has passed on the hardware in use.
DEFAULT_IMPLEMENTATION = {"tpu": "pallas_tpu"}


def _mosaic_gpu():
    from linmix.ops.gla.mosaic_gpu import gla_mosaic_gpu  # Mosaic GPU modules load on demand

    return gla_mosaic_gpu


def _triton():
    from linmix.ops.gla.triton import gla_triton  # Triton loads on demand

    return gla_triton


def default_implementation(backend: str | None = None) -> str:
    """The implementation `implementation=None` selects on `backend` (default: JAX's)."""
    return DEFAULT_IMPLEMENTATION.get(backend or jax.default_backend(), "xla")


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
      implementation: None (the backend's best: `default_implementation()`), 'xla' (chunked,
        custom backward that stores no per-token state), 'pallas_tpu' / 'pallas_gpu' (the
        chunked form as fused Pallas kernels, forward and backward; interpret mode on CPU),
        'mosaic_gpu' (Mosaic GPU kernels, forward and backward, wgmma products: bf16 / f16
        q, k, v, no or scalar gates; Pallas' GPU interpreter on CPU), 'triton' (Triton
        kernels through jax_triton, forward and backward: bf16 / f16 / fp32, per-channel gates
        as a kernel state pass after XLA's intra-chunk parts; Triton's interpreter on CPU),
        'associative_scan' (parallel prefix scan over per-token K x V states: small states
        only, refused above `scan.MAX_STATE_BYTES`) or 'reference' (per-token scan).

    Returns:
      (o, final_state): o [B, T, H, V] in q.dtype; final_state [B, H, K, V] fp32, or None when
      output_final_state is False (always None for causal=False).
    """
    impl = default_implementation() if implementation is None else implementation
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS} or None, got {impl!r}")
    _validate(q, k, v, g, initial_state, segment_ids, chunk_size, normalize)
    if not causal and (output_final_state or initial_state is not None):
        raise ValueError(
            "causal=False has no recurrent state: initial_state and output_final_state=True "
            "are not supported with it"
        )
    scale = q.shape[-1] ** -0.5 if scale is None else scale

    if normalize:
        v = features.with_denominator(v)
    form = _CAUSAL_FORMS[impl]
    extra = {"chunk_size": chunk_size} if impl in _CHUNKED else {}
    if impl in _KERNELS:  # a kernel asked for on a CPU backend runs in interpret mode
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
