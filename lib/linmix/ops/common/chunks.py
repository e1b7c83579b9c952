"""Chunk layout and segment bookkeeping shared by the chunked engines, all chunks at once.

A sequence of T tokens is cut into N chunks of C tokens (time zero-padded at the end) and laid
out as [B, H, N, C, .], so (B, H, N) are the leading batch dims of every matmul. This module has
what every engine's chunked form needs and nothing engine-specific: the layout (`to_chunks`,
`from_chunks`, `chunk_inputs`), gate layouts (`gate_BTHX`), segment masks for packed documents
(`segment_masks`, `pair_mask`, `where_mask`), within-chunk sums as matmuls (`within_chunk_sum`,
`spread`) and the masked exponential (`masked_exp`). The derivations are in docs/forms.md.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

_F32 = jnp.float32


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


def gate_BTHX(g: jax.Array | None, q_shape: tuple[int, ...]) -> jax.Array:
    """Log-decay as [B, T, H, X], X = 1 (none: zeros / scalar per head) or K (per key channel),
    so that every gate kind broadcasts the same way against [.., K] and [.., K, V] tensors."""
    if g is None:
        return jnp.zeros((*q_shape[:3], 1), _F32)
    return g[..., None] if g.ndim == 3 else g


def chunk_length(T: int, chunk_size: int) -> int:
    """A chunk longer than the (power-of-two rounded) sequence would only compute padding."""
    return min(chunk_size, 1 << (T - 1).bit_length())


def pad_time(x_BT: jax.Array, C: int, mode: str = "constant") -> jax.Array:
    T = x_BT.shape[1]
    if T % C == 0:
        return x_BT
    widths = [(0, 0)] * x_BT.ndim
    widths[1] = (0, -(-T // C) * C - T)
    return jnp.pad(x_BT, widths, mode=mode)


def to_chunks(x_BTHD: jax.Array, C: int) -> jax.Array:
    """[B, T, H, D] -> [B, H, N, C, D] in fp32, zero-padding T up to N * C."""
    B, T, H, D = x_BTHD.shape
    x_BNCHD = pad_time(x_BTHD.astype(_F32), C).reshape(B, -1, C, H, D)
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
    seg_BNC = pad_time(seg_BT, C, mode="edge").reshape(seg_BT.shape[0], -1, C)
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


def where_mask(mask_BN: jax.Array | None, x_BHN: jax.Array) -> jax.Array:
    """x where the [B, N, ...] mask (broadcast over heads and trailing dims) holds, else 0."""
    if mask_BN is None:
        return x_BHN
    mask = mask_BN[:, None]
    mask = mask.reshape(mask.shape + (1,) * (x_BHN.ndim - mask.ndim))
    return jnp.where(mask, x_BHN, 0.0)


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


def strict_causal(C: int) -> jax.Array:
    return jnp.tril(jnp.ones((C, C), bool), k=-1)


def pair_mask(causal_RS: jax.Array, same_BNRS: jax.Array | None) -> jax.Array:
    """A causal [R, S] pattern, restricted to same-segment pairs [B, N, .., R, S] (a head axis
    is inserted after B): [B or 1, 1, N or 1, .., R, S]."""
    if same_BNRS is None:
        return causal_RS[None, None, None]
    same_B1NRS = same_BNRS[:, None]
    return causal_RS.reshape((1,) * (same_B1NRS.ndim - 2) + causal_RS.shape) & same_B1NRS


def masked_exp(x: jax.Array, mask: jax.Array) -> jax.Array:
    """exp(x) where mask else 0 (mask broadcasts against x). The argument is masked too: exp of
    an anti-causal (positive) difference could overflow, and inf * 0 in the backward is NaN."""
    mask = jnp.broadcast_to(mask, x.shape)
    return jnp.where(mask, jnp.exp(jnp.where(mask, x, 0.0)), 0.0)


def segment_starts(segment_ids_BT: jax.Array | None, batch: int, length: int) -> jax.Array:
    """[B, T] bool, True where a token starts a new segment (never at t=0: the initial state
    belongs to the first segment)."""
    if segment_ids_BT is None:
        return jnp.zeros((batch, length), bool)
    changes_BT = segment_ids_BT[:, 1:] != segment_ids_BT[:, :-1]
    return jnp.concatenate([jnp.zeros((batch, 1), bool), changes_BT], axis=1)
