"""One decode step of the selective scan (one token of the recurrence in `selective_scan`).

    h <- exp(delta_t A) * h + (delta_t x_t) B_t,    y_t = (C_t . h + D x_t) * silu(z_t)

per inner channel d, O(D M) per token. Looping `selective_scan_step` over the tokens of a sequence
gives the outputs and final state of `selective_scan(..., output_final_state=True)` (without
segment_ids: reset the state yourself at a document boundary).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.common.checks import check_float_dtypes, check_nonpositive
from linmix.ops.ssm import common


def selective_scan_step(
    x_t: jax.Array,
    dt_t: jax.Array,
    A: jax.Array,
    B_t: jax.Array,
    C_t: jax.Array,
    D: jax.Array | None = None,
    z_t: jax.Array | None = None,
    state: jax.Array | None = None,
    *,
    dt_bias: jax.Array | None = None,
    dt_softplus: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Advance the state by one token and read it out.

    Args:
      x_t, dt_t: [B, Dc]; dt_t is raw, as in `selective_scan`.
      A: [Dc, M] (negative reals).
      B_t, C_t: [B, M], or [B, G, M] grouped (channel d uses group d // (Dc / G)).
      D: [Dc] skip or None. z_t: [B, Dc] gate or None.
      state: [B, Dc, M], any float dtype (used in fp32); None is the zero state.
      dt_bias, dt_softplus: as in `selective_scan`.

    Returns:
      (y_t [B, Dc] in x_t.dtype, new state [B, Dc, M] fp32).
    """
    _validate(x_t, dt_t, A, B_t, C_t, D, z_t, state, dt_bias)
    if state is None:
        state = jnp.zeros((*x_t.shape, A.shape[1]), common.F32)
    B_BGM, C_BGM = common.grouped(B_t, x_t), common.grouped(C_t, x_t)
    delta_BD = common.delta(dt_t, dt_bias, dt_softplus)
    h_BDM = common.decay(delta_BD, A) * state.astype(common.F32)
    h_BDM = h_BDM + common.write(delta_BD, x_t, B_BGM)
    y_BD = common.finish(common.read(C_BGM, h_BDM), x_t, D, z_t)
    return y_BD, h_BDM


def _validate(x, dt, A, B, C, D, z, state, dt_bias) -> None:
    """Shapes and dtypes always; values (A <= 0) on eager calls and under
    `linmix.ops.checked`."""
    if x.ndim != 2:
        raise ValueError(f"x_t must have rank 2 [B, Dc], got shape {x.shape}")
    check_float_dtypes(x_t=x, dt_t=dt, B_t=B, C_t=C, D=D, z_t=z, dt_bias=dt_bias)
    Bt, Dc = x.shape
    if dt.shape != x.shape:
        raise ValueError(f"dt_t must have the shape of x_t {x.shape} ([B, Dc]), got {dt.shape}")
    if A.ndim != 2 or A.shape[0] != Dc:
        raise ValueError(f"A must be [Dc, M] with Dc = {Dc}, got shape {A.shape}")
    if not jnp.issubdtype(A.dtype, jnp.floating):
        raise ValueError(f"A must have a real float dtype (negative reals), got {A.dtype}")
    M = A.shape[1]
    if B.ndim not in (2, 3) or B.shape[0] != Bt or B.shape[-1] != M:
        raise ValueError(f"B_t must be [B, M] or [B, G, M] with B={Bt}, M={M}, got {B.shape}")
    if C.shape != B.shape:
        raise ValueError(f"C_t must have the shape of B_t {B.shape}, got {C.shape}")
    if B.ndim == 3 and Dc % B.shape[1]:
        raise ValueError(f"Dc = {Dc} must be divisible by the number of groups G = {B.shape[1]}")
    if D is not None and D.shape != (Dc,):
        raise ValueError(f"D must be [Dc] = ({Dc},), got {D.shape}")
    if dt_bias is not None and dt_bias.shape != (Dc,):
        raise ValueError(f"dt_bias must be [Dc] = ({Dc},), got {dt_bias.shape}")
    if z is not None and z.shape != x.shape:
        raise ValueError(f"z_t must have the shape of x_t {x.shape}, got {z.shape}")
    if state is not None:
        if state.shape != (Bt, Dc, M):
            raise ValueError(f"state must be [B, Dc, M] = {(Bt, Dc, M)}, got {state.shape}")
        if not jnp.issubdtype(state.dtype, jnp.floating):
            raise ValueError(f"state must have a real float dtype, got {state.dtype}")
    check_nonpositive("A", A, "decay rates")
