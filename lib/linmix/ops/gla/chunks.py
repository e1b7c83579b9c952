"""Per-chunk pieces of the chunked gated linear attention (MIXERS.md §1.4), all chunks at once.

Chunk n covers C consecutive positions. With b_r the within-chunk inclusive cumulative log-decay
(b_0 = 0) and S_[n] the state entering the chunk:

    O_inter[r] = (q_r * exp(b_r)) S_[n]
    O_intra[r] = sum_{s <= r} (sum_i q_ri k_si exp(b_ri - b_si)) v_s
    S_[n+1]    = exp(b_C) * S_[n] + (k * exp(b_C - b))^T v

`chunk_terms` computes everything that does not need S_[n]: the intra-chunk output, the decayed
queries, the chunk decay a_n = exp(b_C) and the state increment. It is a pure function of the
chunked inputs, so the backward pass can recompute it and differentiate it with `jax.vjp`.

Every exponent is <= 0 for g <= 0, so strong decays only underflow to 0 (where the true weight
is below fp32 range anyway) and never overflow, in the forward or in the gradients; decays are
only ever accumulated within a chunk, so the length T plays no role.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

_F32 = jnp.float32
# Sub-chunk length for per-channel (vector) gates: the explicit [c, c, K] decay tensor is only
# built within sub-chunks; pairs across sub-chunks are plain matmuls (see `_intra_vector`).
SUBCHUNK = 16


class Chunked(NamedTuple):
    """Inputs cut into N chunks of length C (time padded at the end), all fp32."""

    q_BNCHK: jax.Array
    k_BNCHK: jax.Array
    v_BNCHV: jax.Array
    g_BNCHX: jax.Array  # X = 1 (no gate / scalar) or K (vector gate)


class Masks(NamedTuple):
    """Segment bookkeeping per chunk (no gradients flow through these)."""

    reads_state_BNC: jax.Array  # query still in the segment of the token before the chunk
    keeps_state_BN: jax.Array  # the chunk never left that segment: carried state survives
    in_last_seg_BNC: jax.Array  # key belongs to the segment that is open at the chunk end
    same_seg_BNRS: jax.Array  # query r and key s share a segment


class Terms(NamedTuple):
    o_intra_BNCHV: jax.Array
    q_decay_BNCHK: jax.Array
    a_BNHX: jax.Array
    dS_BNHKV: jax.Array


def gate_BTHX(g: jax.Array | None, q_shape: tuple[int, ...]) -> jax.Array:
    """Log-decay as [B, T, H, X], X = 1 (none: zeros / scalar per head) or K (per key channel),
    so that every gate kind broadcasts the same way against [.., K] and [.., K, V] tensors."""
    if g is None:
        return jnp.zeros((*q_shape[:3], 1), _F32)
    return g[..., None] if g.ndim == 3 else g


def chunk_length(T: int, chunk_size: int) -> int:
    """A chunk longer than the (power-of-two rounded) sequence would only compute padding."""
    return min(chunk_size, 1 << (T - 1).bit_length())


def to_chunks(x_BT: jax.Array, C: int, *, mode: str = "constant") -> jax.Array:
    """[B, T, ...] -> [B, N, C, ...], padding T up to N * C (zeros, or edge values)."""
    B, T = x_BT.shape[:2]
    N = -(-T // C)
    widths = [(0, 0)] * x_BT.ndim
    widths[1] = (0, N * C - T)
    return jnp.pad(x_BT, widths, mode=mode).reshape(B, N, C, *x_BT.shape[2:])


def from_chunks(x_BNC: jax.Array, T: int) -> jax.Array:
    B, N, C = x_BNC.shape[:3]
    return x_BNC.reshape(B, N * C, *x_BNC.shape[3:])[:, :T]


def chunk_inputs(
    q_BTHK: jax.Array, k_BTHK: jax.Array, v_BTHV: jax.Array, g_BTHX: jax.Array, C: int
) -> Chunked:
    """Padding with g = 0 and k = v = 0 in the last real segment leaves the state untouched."""
    return Chunked(*(to_chunks(x.astype(_F32), C) for x in (q_BTHK, k_BTHK, v_BTHV, g_BTHX)))


def segment_masks(seg_BT: jax.Array, C: int) -> Masks:
    seg_BNC = to_chunks(seg_BT, C, mode="edge")
    # The segment of the token just before each chunk; for the first chunk it is the first
    # token's segment, so the initial state feeds the first segment.
    seg_prev_BN = jnp.concatenate([seg_BNC[:, :1, 0], seg_BNC[:, :-1, -1]], axis=1)
    reads_state_BNC = seg_BNC == seg_prev_BN[:, :, None]
    return Masks(
        reads_state_BNC=reads_state_BNC,
        keeps_state_BN=reads_state_BNC[:, :, -1],
        in_last_seg_BNC=seg_BNC == seg_BNC[:, :, -1:],
        same_seg_BNRS=seg_BNC[:, :, :, None] == seg_BNC[:, :, None, :],
    )


def chunk_terms(x: Chunked, masks: Masks) -> Terms:
    """The state-independent parts of every chunk (see the module docstring)."""
    q_BNCHK, k_BNCHK, v_BNCHV, g_BNCHX = x
    b_BNCHX = jnp.cumsum(g_BNCHX, axis=2)
    if g_BNCHX.shape[-1] == 1:
        P_BNHRS = _intra_scalar(q_BNCHK, k_BNCHK, b_BNCHX[..., 0], masks.same_seg_BNRS)
    else:
        P_BNHRS = _intra_vector(q_BNCHK, k_BNCHK, g_BNCHX, masks.same_seg_BNRS)
    o_intra_BNCHV = jnp.einsum("bnhrs,bnshv->bnrhv", P_BNHRS, v_BNCHV)

    # Keys weighted by their decay to the chunk end, only those of the segment open at the end.
    # The decay to the end, sum_{j > s} g_j, is summed directly rather than taken as b_C - b_s:
    # the difference sends large cancelling gradients into b_C for keys near the chunk end (the
    # last key's exp(0) most of all), whose rounding swamps tiny gate gradients at strong decay.
    to_end_BNCHX = _exclusive_suffix_sum(g_BNCHX, axis=2)
    k_decay_BNCHK = k_BNCHK * jnp.exp(to_end_BNCHX)
    k_decay_BNCHK = jnp.where(masks.in_last_seg_BNC[:, :, :, None, None], k_decay_BNCHK, 0.0)
    dS_BNHKV = jnp.einsum("bnchk,bnchv->bnhkv", k_decay_BNCHK, v_BNCHV)
    a_BNHX = jnp.where(masks.keeps_state_BN[:, :, None, None], jnp.exp(b_BNCHX[:, :, -1]), 0.0)

    # Queries decayed from the chunk start; those in a new segment must not see the carried state.
    q_decay_BNCHK = q_BNCHK * jnp.exp(b_BNCHX)
    q_decay_BNCHK = jnp.where(masks.reads_state_BNC[:, :, :, None, None], q_decay_BNCHK, 0.0)
    return Terms(o_intra_BNCHV, q_decay_BNCHK, a_BNHX, dS_BNHKV)


def _exclusive_suffix_sum(x: jax.Array, axis: int) -> jax.Array:
    """y_s = sum_{j > s} x_j along axis."""
    suffix = jnp.flip(jnp.cumsum(jnp.flip(x, axis=axis), axis=axis), axis=axis)
    shifted = jax.lax.slice_in_dim(suffix, 1, x.shape[axis], axis=axis)
    zeros = jnp.zeros_like(jax.lax.slice_in_dim(suffix, 0, 1, axis=axis))
    return jnp.concatenate([shifted, zeros], axis=axis)


def _strict_causal(C: int) -> jax.Array:
    return jnp.tril(jnp.ones((C, C), bool), k=-1)


def _intra_scalar(
    q_BNCHK: jax.Array, k_BNCHK: jax.Array, b_BNCH: jax.Array, same_seg_BNRS: jax.Array
) -> jax.Array:
    """P[r, s] = (q_r . k_s) exp(b_r - b_s) for s <= r in one segment: the decay factors out.

    The diagonal gets a constant 1 rather than exp(b_r - b_r): the latter sends two large,
    exactly cancelling gradients into b_r, whose fp32 rounding swamps the tiny true gate gradient
    when decays are strong.
    """
    C = q_BNCHK.shape[2]
    strict_BNRS = _strict_causal(C)[None, None] & same_seg_BNRS
    b_BNHC = jnp.moveaxis(b_BNCH, 2, 3)
    diff_BNHRS = b_BNHC[..., :, None] - b_BNHC[..., None, :]
    decay_BNHRS = (
        _masked_exp(diff_BNHRS, strict_BNRS[:, :, None]) + jnp.eye(C, dtype=_F32)[None, None, None]
    )
    qk_BNHRS = jnp.einsum("bnrhk,bnshk->bnhrs", q_BNCHK, k_BNCHK)
    return qk_BNHRS * decay_BNHRS


def _intra_vector(
    q_BNCHK: jax.Array, k_BNCHK: jax.Array, g_BNCHK: jax.Array, same_seg_BNRS: jax.Array
) -> jax.Array:
    """P[r, s] = sum_i q_ri k_si exp(b_ri - b_si) for s <= r in one segment, per-channel decay.

    The decay does not factor out of the key sum, and Q exp(b) (K exp(-b))^T would overflow. The
    chunk is cut into sub-chunks of c = SUBCHUNK positions (MIXERS.md §1.4, secondary chunking):
    - a query in sub-chunk i and a key in an earlier sub-chunk meet at the reference point
      rho_i = b at the end of sub-chunk i - 1: P = (q exp(b_r - rho_i)) . (k exp(rho_i - b_s)),
      both exponents <= 0, one matmul per sub-chunk;
    - pairs inside one sub-chunk use an explicit [c, c, K] decay tensor (diagonal exactly 1).
    Memory per chunk and head is C * (C / c) * K + C * c * K instead of C * C * K.
    """
    B, N, C, H, K = q_BNCHK.shape
    c = min(SUBCHUNK, C)
    n_sub = C // c
    b_BNCHK = jnp.cumsum(g_BNCHK, axis=2)
    # Reference point of each sub-chunk: b just before it (0 for the first).
    b_end_BNIHK = b_BNCHK[:, :, c - 1 :: c]
    rho_BNIHK = jnp.concatenate([jnp.zeros_like(b_end_BNIHK[:, :, :1]), b_end_BNIHK[:, :, :-1]], 2)

    # Within a sub-chunk: b_r - rho_i as a local cumulative sum (no large-number cancellation).
    g_BNIcHK = g_BNCHK.reshape(B, N, n_sub, c, H, K)
    local_BNIcHK = jnp.cumsum(g_BNIcHK, axis=3)
    q_BNIcHK = q_BNCHK.reshape(B, N, n_sub, c, H, K)
    k_BNIcHK = k_BNCHK.reshape(B, N, n_sub, c, H, K)
    same_BNIrs = _sub_blocks(same_seg_BNRS, n_sub)

    # Pairs within a sub-chunk.
    strict_rs = _strict_causal(c)
    diff_BNIHrsK = (
        jnp.moveaxis(local_BNIcHK, 3, 4)[:, :, :, :, :, None, :]
        - jnp.moveaxis(local_BNIcHK, 3, 4)[:, :, :, :, None, :, :]
    )
    mask_BNIHrs1 = (strict_rs[None, None, None] & same_BNIrs)[:, :, :, None, :, :, None]
    eye_11111rs1 = jnp.eye(c, dtype=_F32)[None, None, None, None, :, :, None]
    decay_BNIHrsK = _masked_exp(diff_BNIHrsK, mask_BNIHrs1) + eye_11111rs1
    P_diag_BNHIrs = jnp.einsum("bnirhk,bnishk,bnihrsk->bnhirs", q_BNIcHK, k_BNIcHK, decay_BNIHrsK)
    eye_IJ = jnp.eye(n_sub, dtype=_F32)
    P_BNHRS = jnp.einsum("bnhirs,ij->bnhirjs", P_diag_BNHIrs, eye_IJ).reshape(B, N, H, C, C)
    if n_sub == 1:
        return P_BNHRS

    # Pairs across sub-chunks: keys s < i * c, rescaled to the reference point of sub-chunk i.
    earlier_IS = jnp.arange(C)[None, :] < (jnp.arange(n_sub) * c)[:, None]
    key_exp_BNIShK = rho_BNIHK[:, :, :, None] - b_BNCHK[:, :, None]
    mask_BNIS11 = jnp.broadcast_to(earlier_IS[None, None, :, :, None, None], key_exp_BNIShK.shape)
    k_ref_BNIShK = k_BNCHK[:, :, None] * _masked_exp(key_exp_BNIShK, mask_BNIS11)
    q_ref_BNIcHK = q_BNIcHK * jnp.exp(local_BNIcHK)
    P_off_BNHIrS = jnp.einsum("bnirhk,bnishk->bnhirs", q_ref_BNIcHK, k_ref_BNIShK)
    block_lower_RS = (jnp.arange(C)[None, :] // c) < (jnp.arange(C)[:, None] // c)
    P_off_BNHRS = jnp.where(
        (block_lower_RS[None, None] & same_seg_BNRS)[:, :, None],
        P_off_BNHIrS.reshape(B, N, H, C, C),
        0.0,
    )
    return P_BNHRS + P_off_BNHRS


def _sub_blocks(x_BNRS: jax.Array, n_sub: int) -> jax.Array:
    """The n_sub diagonal [c, c] blocks of a [.., C, C] matrix, as [.., n_sub, c, c]."""
    B, N, C, _ = x_BNRS.shape
    c = C // n_sub
    blocks = x_BNRS.reshape(B, N, n_sub, c, n_sub, c)
    idx = jnp.arange(n_sub)
    return blocks[:, :, idx, :, idx, :].transpose(1, 2, 0, 3, 4)


def _masked_exp(x: jax.Array, mask: jax.Array) -> jax.Array:
    """exp(x) where mask else 0 (mask broadcasts against x). The argument is masked too: exp of
    an anti-causal (positive) difference could overflow, and inf * 0 in the backward is NaN."""
    mask = jnp.broadcast_to(mask, x.shape)
    return jnp.where(mask, jnp.exp(jnp.where(mask, x, 0.0)), 0.0)
