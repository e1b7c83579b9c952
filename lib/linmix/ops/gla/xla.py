"""Chunked gated linear attention in plain XLA ops (autodiff gives the backward pass).

Chunk n covers C consecutive positions. With b_r the within-chunk inclusive cumulative log-decay
(b_0 = 0) and S_[n] the state entering the chunk:

    O_inter[r] = (q_r * exp(b_r)) S_[n]
    O_intra[r] = sum_{s <= r} (sum_i q_ri k_si exp(b_ri - b_si)) v_s
    O          = scale * (O_inter + O_intra)
    S_[n+1]    = exp(b_C) * S_[n] + (k * exp(b_C - b))^T v

All math is fp32 whatever the input dtype (bf16 inputs are upcast): mixed bf16 x bf16 -> fp32
dots are rejected by some XLA backends (the CPU runtime among them), and the decayed operands
need fp32 range anyway. The output is cast back to q.dtype by the caller.

Every per-chunk piece is computed for all chunks at once; only the small recurrence
S_[n+1] = a_n S_[n] + dS_n runs as a `lax.scan` over chunks, so just N = T / C states are ever
materialised (never one per token). Every exponent is <= 0 for g <= 0, so even extreme decays
only underflow to 0 and never produce inf/NaN, in the forward or in the gradients.

Packed segments are handled with masks rather than -inf gates: intra-chunk pairs must share a
segment, a query reads the carried state only if it is still in the segment of the token before
the chunk, and the carried state survives a chunk only if the chunk never left that segment.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_F32 = jnp.float32


def gla_chunked(
    q_BTHK: jax.Array,
    k_BTHK: jax.Array,
    v_BTHV: jax.Array,
    g: jax.Array | None,
    *,
    scale: float,
    initial_state: jax.Array | None,
    segment_ids: jax.Array | None,
    chunk_size: int,
) -> tuple[jax.Array, jax.Array]:
    """Causal chunked form. Returns (o [B, T, H, V] fp32, final state [B, H, K, V] fp32)."""
    B, T, H, K = q_BTHK.shape
    V = v_BTHV.shape[-1]
    # A chunk longer than the (power-of-two rounded) sequence would only compute padding.
    C = min(chunk_size, 1 << (T - 1).bit_length())
    N = -(-T // C)
    pad = N * C - T

    # Log-decay as [B, T, H, X] with X = 1 (none / scalar per head) or K (per key channel), so
    # the inter-chunk code broadcasts the same way for every gate kind.
    if g is None:
        g_BTHX = jnp.zeros((B, T, H, 1), _F32)
    elif g.ndim == 3:
        g_BTHX = g.astype(_F32)[..., None]
    else:
        g_BTHX = g.astype(_F32)
    seg_BT = jnp.zeros((B, T), jnp.int32) if segment_ids is None else segment_ids

    # Padding with g = 0 and k = v = 0 in the last real segment leaves the state untouched.
    def pad_time(x: jax.Array, mode: str = "constant") -> jax.Array:
        widths = [(0, 0)] * x.ndim
        widths[1] = (0, pad)
        return jnp.pad(x, widths, mode=mode)

    def to_chunks(x: jax.Array) -> jax.Array:
        return x.reshape(B, N, C, *x.shape[2:])

    q_BNCHK = to_chunks(pad_time(q_BTHK.astype(_F32)))
    k_BNCHK = to_chunks(pad_time(k_BTHK.astype(_F32)))
    v_BNCHV = to_chunks(pad_time(v_BTHV.astype(_F32)))
    g_BNCHX = to_chunks(pad_time(g_BTHX))
    seg_BNC = to_chunks(pad_time(seg_BT, mode="edge"))

    b_BNCHX = jnp.cumsum(g_BNCHX, axis=2)
    b_last_BNHX = b_BNCHX[:, :, -1]

    # Segment bookkeeping. seg_prev is the segment of the token just before each chunk; for the
    # first chunk it is the first token's segment, so the initial state feeds the first segment.
    seg_prev_BN = jnp.concatenate([seg_BNC[:, :1, 0], seg_BNC[:, :-1, -1]], axis=1)
    reads_state_BNC = seg_BNC == seg_prev_BN[:, :, None]
    keeps_state_BN = reads_state_BNC[:, :, -1]
    in_last_seg_BNC = seg_BNC == seg_BNC[:, :, -1:]
    same_seg_BNRS = seg_BNC[:, :, :, None] == seg_BNC[:, :, None, :]
    o_intra_BNCHV = _intra_chunk(q_BNCHK, k_BNCHK, v_BNCHV, b_BNCHX, same_seg_BNRS)

    # Per-chunk state increment: keys weighted by their decay to the chunk end, and only those in
    # the chunk's last segment (earlier segments are finished by the end of the chunk). The decay
    # to the end, sum_{j > s} g_j, is summed directly rather than taken as b_C - b_s: the
    # difference sends large cancelling gradients into b_C for keys near the chunk end (the last
    # key's exp(0) most of all), and their rounding swamps tiny gate gradients at strong decay.
    suffix_BNCHX = jnp.flip(jnp.cumsum(jnp.flip(g_BNCHX, axis=2), axis=2), axis=2)
    to_end_BNCHX = jnp.concatenate(
        [suffix_BNCHX[:, :, 1:], jnp.zeros_like(suffix_BNCHX[:, :, :1])], axis=2
    )
    k_decay_BNCHK = k_BNCHK * jnp.exp(to_end_BNCHX)
    k_decay_BNCHK = jnp.where(in_last_seg_BNC[:, :, :, None, None], k_decay_BNCHK, 0.0)
    dS_BNHKV = jnp.einsum("bnchk,bnchv->bnhkv", k_decay_BNCHK, v_BNCHV)
    a_BNHX = jnp.where(keeps_state_BN[:, :, None, None], jnp.exp(b_last_BNHX), 0.0)

    S0_BHKV = jnp.zeros((B, H, K, V), _F32) if initial_state is None else initial_state.astype(_F32)

    def step(S_BHKV: jax.Array, xs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        a_BHX, dS_BHKV = xs
        return a_BHX[..., None] * S_BHKV + dS_BHKV, S_BHKV

    S_final_BHKV, S_NBHKV = jax.lax.scan(
        step, S0_BHKV, (jnp.moveaxis(a_BNHX, 1, 0), jnp.moveaxis(dS_BNHKV, 1, 0))
    )
    S_BNHKV = jnp.moveaxis(S_NBHKV, 0, 1)  # state entering each chunk

    # Queries decayed from the chunk start; those in a new segment must not see the carried state.
    q_decay_BNCHK = q_BNCHK * jnp.exp(b_BNCHX)
    q_decay_BNCHK = jnp.where(reads_state_BNC[:, :, :, None, None], q_decay_BNCHK, 0.0)
    o_inter_BNCHV = jnp.einsum("bnchk,bnhkv->bnchv", q_decay_BNCHK, S_BNHKV)

    o_BTHV = (scale * (o_inter_BNCHV + o_intra_BNCHV)).reshape(B, N * C, H, V)[:, :T]
    return o_BTHV, S_final_BHKV


def _intra_chunk(
    q_BNCHK: jax.Array,
    k_BNCHK: jax.Array,
    v_BNCHV: jax.Array,
    b_BNCHX: jax.Array,
    same_seg_BNRS: jax.Array,
) -> jax.Array:
    """sum_{s <= r, same segment} (sum_i q_ri k_si exp(b_ri - b_si)) v_s, as [B, N, C, H, V]."""
    C = q_BNCHK.shape[2]
    strict_CC = jnp.tril(jnp.ones((C, C), bool), k=-1)
    eye_CC = jnp.eye(C, dtype=_F32)
    # Pairs s < r in the same segment get exp(b_r - b_s); the diagonal gets a constant 1 rather
    # than exp(b_r - b_r): the latter sends two large, exactly cancelling gradients into b_r,
    # whose fp32 rounding swamps the tiny true gate gradient when decays are strong.
    strict_BNRS = strict_CC[None, None] & same_seg_BNRS
    b_BNHCX = jnp.moveaxis(b_BNCHX, 2, 3)
    if b_BNCHX.shape[-1] == 1:
        # Scalar decay factors out of the key sum: P = (Q K^T) * exp(b_r - b_s).
        b_BNHC = b_BNHCX[..., 0]
        diff_BNHRS = b_BNHC[..., :, None] - b_BNHC[..., None, :]
        decay_BNHRS = _masked_exp(diff_BNHRS, strict_BNRS[:, :, None]) + eye_CC[None, None, None]
        qk_BNHRS = jnp.einsum("bnrhk,bnshk->bnhrs", q_BNCHK, k_BNCHK)
        P_BNHRS = qk_BNHRS * decay_BNHRS
    else:
        # Per-channel decay does not factor out: build the (C, C, K) exponent tensor per chunk.
        diff_BNHRSK = b_BNHCX[:, :, :, :, None, :] - b_BNHCX[:, :, :, None, :, :]
        decay_BNHRSK = (
            _masked_exp(diff_BNHRSK, strict_BNRS[:, :, None, :, :, None])
            + eye_CC[None, None, None, :, :, None]
        )
        P_BNHRS = jnp.einsum("bnrhk,bnshk,bnhrsk->bnhrs", q_BNCHK, k_BNCHK, decay_BNHRSK)
    return jnp.einsum("bnhrs,bnshv->bnrhv", P_BNHRS, v_BNCHV)


def _masked_exp(x: jax.Array, mask: jax.Array) -> jax.Array:
    """exp(x) where mask else 0 (mask broadcasts against x). The argument is masked too: exp of
    an anti-causal (positive) difference could overflow, and inf * 0 in the backward is NaN."""
    mask = jnp.broadcast_to(mask, x.shape)
    return jnp.where(mask, jnp.exp(jnp.where(mask, x, 0.0)), 0.0)


def gla_bidirectional_chunked(
    q_BTHK: jax.Array,
    k_BTHK: jax.Array,
    v_BTHV: jax.Array,
    g: jax.Array | None,
    *,
    scale: float,
    segment_ids: jax.Array | None,
    chunk_size: int,
) -> jax.Array:
    """Non-causal form as forward scan + reverse scan - diagonal. Returns o [B, T, H, V] fp32.

    The reverse pass sees key s from query t <= s with weight prod_{t<j<=s} a_j, i.e. it is the
    causal recurrence on the time-flipped sequence with the gates shifted by one position.
    """
    kwargs = dict(scale=scale, initial_state=None, chunk_size=chunk_size)
    o_fwd_BTHV, _ = gla_chunked(q_BTHK, k_BTHK, v_BTHV, g, segment_ids=segment_ids, **kwargs)

    def flip(x: jax.Array | None) -> jax.Array | None:
        return None if x is None else jnp.flip(x, axis=1)

    g_shift = None
    if g is not None:
        # Gate of position t+1 drives the step from t+1 to t; nothing follows the last token.
        g_shift = jnp.concatenate([g[:, 1:], jnp.zeros_like(g[:, :1])], axis=1)
    # Flipped segment ids are non-increasing; the chunked form only compares ids for equality.
    o_rev_BTHV, _ = gla_chunked(
        flip(q_BTHK),
        flip(k_BTHK),
        flip(v_BTHV),
        flip(g_shift),
        segment_ids=flip(segment_ids),
        **kwargs,
    )
    # Both passes count the s = t term (weight 1): remove one copy.
    qk_BTH = jnp.sum(q_BTHK.astype(_F32) * k_BTHK.astype(_F32), axis=-1)
    diag_BTHV = scale * qk_BTH[..., None] * v_BTHV.astype(_F32)
    return o_fwd_BTHV + flip(o_rev_BTHV) - diag_BTHV
