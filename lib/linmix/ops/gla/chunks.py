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
    """Inputs cut into N chunks of length C, heads before chunks (time padded at the end), fp32.
    The [B, H, N, C, .] layout makes (B, H, N) the leading batch dims of every matmul."""

    q_BHNCK: jax.Array
    k_BHNCK: jax.Array
    v_BHNCV: jax.Array
    g_BHNCX: jax.Array | None  # None (no gate), X = 1 (scalar) or X = K (vector gate)


class Masks(NamedTuple):
    """Segment bookkeeping per chunk (no gradients flow through these)."""

    reads_state_BNC: jax.Array  # query still in the segment of the token before the chunk
    keeps_state_BN: jax.Array  # the chunk never left that segment: carried state survives
    in_last_seg_BNC: jax.Array  # key belongs to the segment that is open at the chunk end
    same_seg_BNRS: jax.Array  # query r and key s share a segment


class Terms(NamedTuple):
    o_intra_BHNCV: jax.Array
    q_decay_BHNCK: jax.Array
    a_BHNX: jax.Array
    dS_BHNKV: jax.Array


def gate_BTHX(g: jax.Array | None, q_shape: tuple[int, ...]) -> jax.Array:
    """Log-decay as [B, T, H, X], X = 1 (none: zeros / scalar per head) or K (per key channel),
    so that every gate kind broadcasts the same way against [.., K] and [.., K, V] tensors."""
    if g is None:
        return jnp.zeros((*q_shape[:3], 1), _F32)
    return g[..., None] if g.ndim == 3 else g


def chunk_length(T: int, chunk_size: int) -> int:
    """A chunk longer than the (power-of-two rounded) sequence would only compute padding."""
    return min(chunk_size, 1 << (T - 1).bit_length())


def _pad_time(x_BT: jax.Array, C: int, mode: str = "constant") -> jax.Array:
    T = x_BT.shape[1]
    if T % C == 0:
        return x_BT
    widths = [(0, 0)] * x_BT.ndim
    widths[1] = (0, -(-T // C) * C - T)
    return jnp.pad(x_BT, widths, mode=mode)


def to_chunks(x_BTHD: jax.Array, C: int) -> jax.Array:
    """[B, T, H, D] -> [B, H, N, C, D] in fp32, zero-padding T up to N * C."""
    B, T, H, D = x_BTHD.shape
    x_BNCHD = _pad_time(x_BTHD.astype(_F32), C).reshape(B, -1, C, H, D)
    return x_BNCHD.transpose(0, 3, 1, 2, 4)


def from_chunks(x_BHNCD: jax.Array, T: int) -> jax.Array:
    """[B, H, N, C, D] -> [B, T, H, D]."""
    B, H, N, C, D = x_BHNCD.shape
    return x_BHNCD.transpose(0, 2, 3, 1, 4).reshape(B, N * C, H, D)[:, :T]


def chunk_inputs(
    q_BTHK: jax.Array, k_BTHK: jax.Array, v_BTHV: jax.Array, g_BTHX: jax.Array | None, C: int
) -> Chunked:
    """Padding with g = 0 and k = v = 0 in the last real segment leaves the state untouched."""
    g_BHNCX = None if g_BTHX is None else to_chunks(g_BTHX, C)
    return Chunked(*(to_chunks(x, C) for x in (q_BTHK, k_BTHK, v_BTHV)), g_BHNCX)


def segment_masks(seg_BT: jax.Array | None, C: int) -> Masks | None:
    """None without segments: every mask would be all-true, and skipping them saves time."""
    if seg_BT is None:
        return None
    seg_BNC = _pad_time(seg_BT, C, mode="edge").reshape(seg_BT.shape[0], -1, C)
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


def _where(mask_BN: jax.Array | None, x_BHN: jax.Array) -> jax.Array:
    """x where the [B, N, ...] mask (broadcast over heads and trailing dims) holds, else 0."""
    if mask_BN is None:
        return x_BHN
    mask = mask_BN[:, None]
    mask = mask.reshape(mask.shape + (1,) * (x_BHN.ndim - mask.ndim))
    return jnp.where(mask, x_BHN, 0.0)


class Parts(NamedTuple):
    """The value-independent parts of every chunk: o = q_decay S + P v, S' = a S + k_decay^T v."""

    P_BHNRS: jax.Array  # intra-chunk pair weights, diagonal included
    q_decay_BHNCK: jax.Array
    k_decay_BHNCK: jax.Array
    a_BHNX: jax.Array


def chunk_terms(x: Chunked, masks: Masks | None) -> Terms:
    """The state-independent parts of every chunk (see the module docstring)."""
    p = chunk_parts(x, masks)
    o_intra_BHNCV = jnp.einsum("bhnrs,bhnsv->bhnrv", p.P_BHNRS, x.v_BHNCV)
    dS_BHNKV = jnp.einsum("bhnck,bhncv->bhnkv", p.k_decay_BHNCK, x.v_BHNCV)
    return Terms(o_intra_BHNCV, p.q_decay_BHNCK, p.a_BHNX, dS_BHNKV)


def chunk_parts(x: Chunked, masks: Masks | None) -> Parts:
    """P, the decayed queries and keys and the chunk decays (no values needed)."""
    q_BHNCK, k_BHNCK, _, g_BHNCX = x
    same_BNRS = None if masks is None else masks.same_seg_BNRS
    if g_BHNCX is None:
        return _parts_without_gate(q_BHNCK, k_BHNCK, masks)
    if g_BHNCX.shape[-1] == 1:
        b_BHNCX = within_chunk_sum(g_BHNCX, "inclusive")
        P_BHNRS = _intra_scalar(q_BHNCK, k_BHNCK, b_BHNCX[..., 0], same_BNRS)
    else:
        b_BHNCX = within_chunk_sum(g_BHNCX, "inclusive")
        P_BHNRS = _intra_vector(q_BHNCK, k_BHNCK, g_BHNCX, b_BHNCX, same_BNRS)

    # Keys weighted by their decay to the chunk end, only those of the segment open at the end.
    # The decay to the end, sum_{j > s} g_j, is summed directly rather than taken as b_C - b_s:
    # the difference sends large cancelling gradients into b_C for keys near the chunk end (the
    # last key's exp(0) most of all), whose rounding swamps tiny gate gradients at strong decay.
    K = q_BHNCK.shape[-1]

    def over_keys(x_BHNCX: jax.Array) -> jax.Array:
        return x_BHNCX if x_BHNCX.shape[-1] == K else spread(x_BHNCX[..., 0], "...c,k->...ck", K)

    to_end_BHNCX = within_chunk_sum(g_BHNCX, "after")
    k_decay_BHNCK = k_BHNCK * over_keys(jnp.exp(to_end_BHNCX))
    k_decay_BHNCK = _where(masks and masks.in_last_seg_BNC, k_decay_BHNCK)
    a_BHNX = _where(masks and masks.keeps_state_BN, jnp.exp(b_BHNCX[:, :, :, -1]))

    # Queries decayed from the chunk start; those in a new segment must not see the carried state.
    q_decay_BHNCK = q_BHNCK * over_keys(jnp.exp(b_BHNCX))
    q_decay_BHNCK = _where(masks and masks.reads_state_BNC, q_decay_BHNCK)
    return Parts(P_BHNRS, q_decay_BHNCK, k_decay_BHNCK, a_BHNX)


def _parts_without_gate(q_BHNCK: jax.Array, k_BHNCK: jax.Array, masks: Masks | None) -> Parts:
    """`chunk_parts` with every decay 1: a causal mask instead of a decay matrix."""
    B, H, N, C, _ = q_BHNCK.shape
    causal_BHNRS = _pair_mask(jnp.tril(jnp.ones((C, C), bool)), masks and masks.same_seg_BNRS)
    qk_BHNRS = jnp.einsum("bhnrk,bhnsk->bhnrs", q_BHNCK, k_BHNCK)
    P_BHNRS = jnp.where(causal_BHNRS, qk_BHNRS, 0.0)
    k_BHNCK = _where(masks and masks.in_last_seg_BNC, k_BHNCK)
    a_BHNX = _where(masks and masks.keeps_state_BN, jnp.ones((B, H, N, 1), _F32))
    q_decay_BHNCK = _where(masks and masks.reads_state_BNC, q_BHNCK)
    return Parts(P_BHNRS, q_decay_BHNCK, k_BHNCK, a_BHNX)


def spread(x: jax.Array, spec: str, size: int) -> jax.Array:
    """A broadcast written as a product with ones, e.g. spread(b, '...r,s->...rs', C).

    Its transpose in the backward pass is then a matmul-style contraction; the plain broadcast's
    transpose (a fused multiply-and-reduce) runs several times slower on XLA:CPU.
    """
    return jnp.einsum(spec, x, jnp.ones((size,), x.dtype))


def within_chunk_sum(x_BHNCX: jax.Array, pattern: str) -> jax.Array:
    """Sums over the chunk axis (3) as a matmul with a 0/1 matrix, which XLA runs much faster
    than `cumsum` on CPU: 'inclusive' y_r = sum_{s <= r} x_s, 'after' y_r = sum_{s > r} x_s.
    HIGHEST precision keeps the sums fp32 exact-rounded on backends whose default is bf16."""
    C = x_BHNCX.shape[3]
    r = jnp.arange(C)[:, None]
    s = jnp.arange(C)[None, :]
    M_RS = (s <= r) if pattern == "inclusive" else (s > r)
    return jnp.einsum(
        "rs,bhnsx->bhnrx", M_RS.astype(x_BHNCX.dtype), x_BHNCX, precision=jax.lax.Precision.HIGHEST
    )


def _strict_causal(C: int) -> jax.Array:
    return jnp.tril(jnp.ones((C, C), bool), k=-1)


def _intra_scalar(
    q_BHNCK: jax.Array, k_BHNCK: jax.Array, b_BHNC: jax.Array, same_BNRS: jax.Array | None
) -> jax.Array:
    """P[r, s] = (q_r . k_s) exp(b_r - b_s) for s <= r in one segment: the decay factors out.

    The diagonal gets a constant 1 rather than exp(b_r - b_r): the latter sends two large,
    exactly cancelling gradients into b_r, whose fp32 rounding swamps the tiny true gate gradient
    when decays are strong.
    """
    C = q_BHNCK.shape[3]
    strict_BHNRS = _pair_mask(_strict_causal(C), same_BNRS)
    diff_BHNRS = spread(b_BHNC, "...r,s->...rs", C) - spread(b_BHNC, "...s,r->...rs", C)
    decay_BHNRS = _masked_exp(diff_BHNRS, strict_BHNRS) + jnp.eye(C, dtype=_F32)[None, None, None]
    qk_BHNRS = jnp.einsum("bhnrk,bhnsk->bhnrs", q_BHNCK, k_BHNCK)
    return qk_BHNRS * decay_BHNRS


def _pair_mask(causal_RS: jax.Array, same_BNRS: jax.Array | None) -> jax.Array:
    """A causal [R, S] pattern, restricted to same-segment pairs [B, N, .., R, S] (a head axis
    is inserted after B): [B or 1, 1, N or 1, .., R, S]."""
    if same_BNRS is None:
        return causal_RS[None, None, None]
    same_B1NRS = same_BNRS[:, None]
    return causal_RS.reshape((1,) * (same_B1NRS.ndim - 2) + causal_RS.shape) & same_B1NRS


def _intra_vector(
    q_BHNCK: jax.Array,
    k_BHNCK: jax.Array,
    g_BHNCK: jax.Array,
    b_BHNCK: jax.Array,
    same_BNRS: jax.Array | None,
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
    B, H, N, C, K = q_BHNCK.shape
    c = min(SUBCHUNK, C)
    n_sub = C // c
    sub = (B, H, N, n_sub, c, K)
    # Within a sub-chunk: b_r - rho_i as a local cumulative sum (no large-number cancellation).
    local_BHNIcK = within_chunk_sum(g_BHNCK.reshape(B, H, N * n_sub, c, K), "inclusive").reshape(
        sub
    )
    q_BHNIcK = q_BHNCK.reshape(sub)
    k_BHNIcK = k_BHNCK.reshape(sub)

    # Pairs within a sub-chunk.
    same_BNIrs = None if same_BNRS is None else _diagonal_blocks(same_BNRS, n_sub)
    mask_BHNIrs = _pair_mask(_strict_causal(c), same_BNIrs)
    diff_BHNIrsK = local_BHNIcK[..., :, None, :] - local_BHNIcK[..., None, :, :]
    eye_11111rs1 = jnp.eye(c, dtype=_F32)[None, None, None, None, :, :, None]
    decay_BHNIrsK = _masked_exp(diff_BHNIrsK, mask_BHNIrs[..., None]) + eye_11111rs1
    # q_r * decay_rs, then contracted with k_s: a dot (the fused three-way product-and-sum
    # runs several times slower on XLA:CPU).
    qd_BHNIrsK = spread(q_BHNIcK, "...rk,s->...rsk", c) * decay_BHNIrsK
    P_diag_BHNIrs = jnp.einsum("bhnirsk,bhnisk->bhnirs", qd_BHNIrsK, k_BHNIcK)
    eye_IJ = jnp.eye(n_sub, dtype=_F32)
    P_BHNRS = jnp.einsum("bhnirs,ij->bhnirjs", P_diag_BHNIrs, eye_IJ).reshape(B, H, N, C, C)
    if n_sub == 1:
        return P_BHNRS

    # Pairs across sub-chunks: keys s < i * c, rescaled to the reference point of sub-chunk i.
    b_end_BHNIK = b_BHNCK[:, :, :, c - 1 :: c]
    rho_BHNIK = jnp.concatenate(
        [jnp.zeros_like(b_end_BHNIK[..., :1, :]), b_end_BHNIK[..., :-1, :]], 3
    )
    earlier_IS = jnp.arange(C)[None, :] < (jnp.arange(n_sub) * c)[:, None]
    key_exp_BHNISK = rho_BHNIK[..., :, None, :] - b_BHNCK[..., None, :, :]
    earlier_111ISK = earlier_IS[None, None, None, :, :, None]
    k_ref_BHNISK = k_BHNCK[..., None, :, :] * _masked_exp(key_exp_BHNISK, earlier_111ISK)
    q_ref_BHNIcK = q_BHNIcK * jnp.exp(local_BHNIcK)
    P_off_BHNIrS = jnp.einsum("bhnirk,bhnisk->bhnirs", q_ref_BHNIcK, k_ref_BHNISK)
    block_lower_RS = (jnp.arange(C)[None, :] // c) < (jnp.arange(C)[:, None] // c)
    mask_BHNRS = jnp.broadcast_to(_pair_mask(block_lower_RS, same_BNRS), (B, H, N, C, C))
    P_off_BHNRS = jnp.where(mask_BHNRS, P_off_BHNIrS.reshape(B, H, N, C, C), 0.0)
    return P_BHNRS + P_off_BHNRS


def _diagonal_blocks(x_BNRS: jax.Array, n_sub: int) -> jax.Array:
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
