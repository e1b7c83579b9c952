"""Chunked selective scan: `lax.scan` over chunks, a parallel prefix scan within each chunk.

The class-E decay exp(delta_t[d] A[d, n]) differs per channel and per state element, so the
matmul-based chunk form of engine L does not apply (docs/mixers.md). Instead the sequence is
cut into N = T / C chunks and a `lax.scan` carries the state h [B, D, M] across them. Inside a
chunk the state entering it is folded into the first token (b_1 += a_1 h_in) and the chunk is an
`associative_scan` over its C elementwise pairs (a_t, b_t) (`scan.linear_recurrence`, whose
backward is the reverse scan of the adjoint recurrence).

Memory: the decays, inputs and per-token states of a chunk, [B, C, D, M] each, exist only inside
the chunk body, which is wrapped in `jax.checkpoint`. The backward therefore keeps only the raw
inputs and the N chunk-boundary states [N, B, D, M], and rebuilds one chunk's per-token states at
a time; it never holds per-token states for the whole sequence.

Padding: T is padded up to a multiple of C with delta = 0, i.e. a = exp(0) = 1 and b = 0, which
carries the state through unchanged, so the final state is that of the last real token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.ssm import common
from linmix.ops.ssm.scan import linear_recurrence


def chunk_length(T: int, chunk_size: int) -> int:
    """A chunk longer than the (power-of-two rounded) sequence would only compute padding."""
    return min(chunk_size, 1 << (T - 1).bit_length())


def selective_scan_chunked(
    x_BTD: jax.Array,
    delta_BTD: jax.Array,
    A_DM: jax.Array,
    B_BTGM: jax.Array,
    C_BTGM: jax.Array,
    *,
    h0_BDM: jax.Array,
    starts_BT: jax.Array,
    chunk_size: int,
) -> tuple[jax.Array, jax.Array]:
    """Returns (y [B, T, D] fp32 without the D skip or z gate, final state [B, D, M] fp32)."""
    Bt, T, D = x_BTD.shape
    C = chunk_length(T, chunk_size)
    A_DM = A_DM.astype(common.F32)

    @jax.checkpoint
    def chunk(h_BDM: jax.Array, xs: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        x_BCD, delta_BCD, B_BCGM, C_BCGM, start_BC = xs
        a_BCDM = jnp.where(start_BC[:, :, None, None], 0.0, common.decay(delta_BCD, A_DM))
        b_BCDM = common.write(delta_BCD, x_BCD, B_BCGM)
        b_BCDM = b_BCDM.at[:, 0].add(a_BCDM[:, 0] * h_BDM)
        h_BCDM = linear_recurrence(a_BCDM, b_BCDM)
        return h_BCDM[:, -1], common.read(C_BCGM, h_BCDM)

    xs = (
        _to_chunks(x_BTD.astype(common.F32), C),
        _to_chunks(delta_BTD, C),
        _to_chunks(B_BTGM.astype(common.F32), C),
        _to_chunks(C_BTGM.astype(common.F32), C),
        _to_chunks(starts_BT, C),
    )
    h_BDM, y_NBCD = jax.lax.scan(chunk, h0_BDM.astype(common.F32), xs)
    y_BTD = jnp.moveaxis(y_NBCD, 0, 1).reshape(Bt, -1, D)[:, :T]
    return y_BTD, h_BDM


def _to_chunks(v_BT: jax.Array, C: int) -> jax.Array:
    """[B, T, ...] -> [N, B, C, ...], zero- (False-) padding T up to N * C; chunks first, for the
    scan. Zero delta in the padding makes it a no-op on the state (see the module docstring)."""
    Bt, T = v_BT.shape[:2]
    pad = -T % C
    if pad:
        widths = [(0, 0)] * v_BT.ndim
        widths[1] = (0, pad)
        v_BT = jnp.pad(v_BT, widths)
    v_BNC = v_BT.reshape(Bt, -1, C, *v_BT.shape[2:])
    return jnp.moveaxis(v_BNC, 1, 0)
