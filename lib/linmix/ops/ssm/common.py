"""Pieces of the selective scan shared by every form (reference, associative scan, chunked, step).

For inner channel d and state element n (docs/mixers.md, per-element decay):

    delta_t[d] = softplus(dt_t[d] + dt_bias[d])            (or dt + dt_bias without softplus)
    a_t[d, n]  = exp(delta_t[d] A[d, n])                    (ZOH decay, in (0, 1] for A < 0)
    b_t[d, n]  = delta_t[d] x_t[d] B_t[g(d), n]             (Euler input term)
    h_t        = a_t * h_{t-1} + b_t
    y_t[d]     = (sum_n C_t[g(d), n] h_t[d, n] + D[d] x_t[d]) * silu(z_t[d])

with g(d) = d // P the group of channel d (P = Dc / G channels per group; ungrouped B and C are
one group). B and C are kept per group and only broadcast against the P channels of their group
inside each form, so no [.., Dc, M] copy of them is ever made outside a chunk.

Everything here works on any leading dims (`...`), so the same functions serve whole sequences,
chunks and single decode tokens. All arithmetic is fp32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.common.chunks import segment_starts  # noqa: F401  (re-exported for the ssm forms)

F32 = jnp.float32
HIGHEST = jax.lax.Precision.HIGHEST


def delta(dt: jax.Array, dt_bias: jax.Array | None, dt_softplus: bool) -> jax.Array:
    """Step size delta [..., D] in fp32 from the raw dt [..., D] and an optional bias [D]."""
    dt = dt.astype(F32)
    if dt_bias is not None:
        dt = dt + _lead(dt_bias.astype(F32), dt.ndim)
    return jax.nn.softplus(dt) if dt_softplus else dt


def decay(delta_XD: jax.Array, A_DM: jax.Array) -> jax.Array:
    """a = exp(delta * A) [..., D, M]. The exponent is <= 0 for A <= 0 and delta >= 0, so strong
    decays underflow to 0 and never overflow."""
    return jnp.exp(delta_XD[..., None] * _lead(A_DM.astype(F32), delta_XD.ndim + 1))


def write(delta_XD: jax.Array, x_XD: jax.Array, B_XGM: jax.Array) -> jax.Array:
    """b = (delta * x) B [..., D, M], each channel using the B of its group."""
    *lead, D = x_XD.shape
    G, M = B_XGM.shape[-2:]
    u_XGP1 = (delta_XD * x_XD.astype(F32)).reshape(*lead, G, D // G, 1)
    b_XGPM = u_XGP1 * B_XGM.astype(F32)[..., None, :]
    return b_XGPM.reshape(*lead, D, M)


def read(C_XGM: jax.Array, h_XDM: jax.Array) -> jax.Array:
    """y[d] = sum_n C[g(d), n] h[d, n]: [..., D]."""
    *lead, D, M = h_XDM.shape
    G = C_XGM.shape[-2]
    h_XGPM = h_XDM.reshape(*lead, G, D // G, M)
    y_XGP = jnp.einsum("...gn,...gpn->...gp", C_XGM.astype(F32), h_XGPM, precision=HIGHEST)
    return y_XGP.reshape(*lead, D)


def finish(
    y_XD: jax.Array, x_XD: jax.Array, D: jax.Array | None, z_XD: jax.Array | None
) -> jax.Array:
    """(y + D x) * silu(z) in fp32, then cast to x.dtype."""
    if D is not None:
        y_XD = y_XD + _lead(D.astype(F32), x_XD.ndim) * x_XD.astype(F32)
    if z_XD is not None:
        y_XD = y_XD * jax.nn.silu(z_XD.astype(F32))
    return y_XD.astype(x_XD.dtype)


def grouped(B: jax.Array, x: jax.Array) -> jax.Array:
    """B or C as [..., G, M]: ungrouped [..., M] (the rank of x) becomes one group [..., 1, M]."""
    return B[..., None, :] if B.ndim == x.ndim else B


def _lead(p: jax.Array, ndim: int) -> jax.Array:
    """A parameter with size-1 leading dims up to rank `ndim` (rank promotion is explicit)."""
    return p.reshape((1,) * (ndim - p.ndim) + p.shape)
