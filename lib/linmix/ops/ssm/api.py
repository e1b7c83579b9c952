"""Public entry point for the Mamba-1 selective scan: input validation and dispatch."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.common import contract
from linmix.ops.common.checks import (
    check_chunk_size,
    check_float_dtypes,
    check_float_state,
    check_nonpositive,
    check_segment_ids,
    check_segment_order,
)
from linmix.ops.ssm import chunked, common, reference, scan

# Every form of the selective scan and what it supports (per-element decays: gate "vector").
CAPABILITIES = {
    "xla_chunked": contract.Capabilities(normalize=False),
    "associative_scan": contract.Capabilities(normalize=False),
    "reference": contract.Capabilities(normalize=False),
}
IMPLEMENTATIONS = tuple(CAPABILITIES)
_FORMS = {
    "xla_chunked": chunked.selective_scan_chunked,
    "associative_scan": scan.selective_scan_associative,
    "reference": reference.selective_scan_reference,
}


def selective_scan(
    x: jax.Array,
    dt: jax.Array,
    A: jax.Array,
    B: jax.Array,
    C: jax.Array,
    D: jax.Array | None = None,
    z: jax.Array | None = None,
    *,
    dt_bias: jax.Array | None = None,
    dt_softplus: bool = True,
    initial_state: jax.Array | None = None,
    output_final_state: bool = False,
    segment_ids: jax.Array | None = None,
    chunk_size: int = 64,
    implementation: str | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """Selective state-space scan (Mamba-1 S6), per inner channel d and state element n:

        delta_t = softplus(dt_t + dt_bias)   (dt_t + dt_bias if dt_softplus is False)
        h_t[d, n] = exp(delta_t[d] A[d, n]) h_{t-1}[d, n] + delta_t[d] B_t[n] x_t[d]
        y_t[d] = (sum_n C_t[n] h_t[d, n] + D[d] x_t[d]) * silu(z_t[d])

    Args:
      x: [B, T, Dc] input (Dc inner channels).
      dt: [B, T, Dc] raw step sizes.
      A: [Dc, M] continuous-time state matrix (diagonal per channel; negative reals, e.g.
        -exp(A_log)).
      B, C: [B, T, M], or [B, T, G, M] grouped: channel d uses group d // (Dc / G).
      D: [Dc] skip connection, or None.
      z: [B, T, Dc] output gate (multiplies by silu(z)), or None.
      dt_bias: [Dc] added to dt before the softplus, or None.
      dt_softplus: apply softplus to dt + dt_bias (the Mamba parameterisation).
      initial_state: [B, Dc, M], any float dtype (used in fp32); feeds the first segment only.
      output_final_state: return the fp32 [B, Dc, M] state after the last token (the state of
        the last segment).
      segment_ids: [B, T] integers, non-decreasing along T (packed documents). The state is reset
        to zero wherever the id changes, so tokens only see their own document.
      chunk_size: chunk length of the chunked form; a positive power of two.
      implementation: None or 'xla_chunked' (default: `lax.scan` over chunks with an associative
        scan inside each, rematerialised, so the backward keeps one state per chunk),
        'associative_scan' (one parallel prefix scan over per-token states: small problems only,
        refused above `scan.MAX_STATE_BYTES`) or 'reference' (per-token scan, the oracle).
        The first two define reverse-mode gradients only (a custom VJP of the linear
        recurrence); forward-mode AD (`jax.jvp`) needs 'reference'.

    Returns:
      (y, final_state): y [B, T, Dc] in x.dtype (all math in fp32); final_state [B, Dc, M] fp32,
      or None when output_final_state is False.
    """
    validate(x, dt, A, B, C, D, z, dt_bias, initial_state, segment_ids, chunk_size)
    request = contract.Request(
        dtypes=(contract.dtype_name(x),),
        gate="vector",
        segments=segment_ids is not None,
        states=initial_state is not None or output_final_state,
    )
    impl = contract.select("ssm", CAPABILITIES, implementation, request, {})
    Bt, T, Dc = x.shape
    if initial_state is None:
        initial_state = jnp.zeros((Bt, Dc, A.shape[1]), common.F32)
    extra = {"chunk_size": chunk_size} if impl == "xla_chunked" else {}
    y_BTD, h_BDM = _FORMS[impl](
        x,
        common.delta(dt, dt_bias, dt_softplus),
        A,
        common.grouped(B, x),
        common.grouped(C, x),
        h0_BDM=initial_state,
        starts_BT=common.segment_starts(segment_ids, Bt, T),
        **extra,
    )
    return common.finish(y_BTD, x, D, z), (h_BDM if output_final_state else None)


def validate(
    x: jax.Array,
    dt: jax.Array,
    A: jax.Array,
    B: jax.Array,
    C: jax.Array,
    D: jax.Array | None,
    z: jax.Array | None,
    dt_bias: jax.Array | None,
    initial_state: jax.Array | None,
    segment_ids: jax.Array | None,
    chunk_size: int,
) -> None:
    """Shapes and dtypes always; values (A <= 0, sorted ids) on eager calls and under
    `linmix.ops.checked` (skipped under plain jit)."""
    if x.ndim != 3:
        raise ValueError(f"x must have rank 3 [B, T, Dc], got shape {x.shape}")
    check_float_dtypes(x=x, dt=dt, B=B, C=C, D=D, z=z, dt_bias=dt_bias)
    Bt, T, Dc = x.shape
    if dt.shape != x.shape:
        raise ValueError(f"dt must have the shape of x {x.shape} ([B, T, Dc]), got {dt.shape}")
    if A.ndim != 2 or A.shape[0] != Dc:
        raise ValueError(f"A must be [Dc, M] with Dc = {Dc}, got shape {A.shape}")
    if not jnp.issubdtype(A.dtype, jnp.floating):
        raise ValueError(f"A must have a real float dtype (negative reals), got {A.dtype}")
    M = A.shape[1]
    if B.ndim not in (3, 4) or B.shape[:2] != (Bt, T) or B.shape[-1] != M:
        raise ValueError(
            f"B must be [B, T, M] or [B, T, G, M] with B={Bt}, T={T}, M={M} (M from A), "
            f"got {B.shape}"
        )
    if C.shape != B.shape:
        raise ValueError(f"C must have the shape of B {B.shape}, got {C.shape}")
    if B.ndim == 4 and Dc % B.shape[2]:
        raise ValueError(f"Dc = {Dc} must be divisible by the number of groups G = {B.shape[2]}")
    for name, p in (("D", D), ("dt_bias", dt_bias)):
        if p is not None and p.shape != (Dc,):
            raise ValueError(f"{name} must be [Dc] = ({Dc},), got {p.shape}")
    if z is not None and z.shape != x.shape:
        raise ValueError(f"z must have the shape of x {x.shape} ([B, T, Dc]), got {z.shape}")
    check_float_state(initial_state, (Bt, Dc, M), "[B, Dc, M]")
    check_segment_ids(segment_ids, Bt, T)
    check_nonpositive("A", A, "decay rates")
    check_segment_order(segment_ids)
    check_chunk_size(chunk_size)
