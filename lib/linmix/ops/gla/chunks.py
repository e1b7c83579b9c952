"""Per-chunk pieces of the chunked gated linear attention (docs/forms.md), all chunks at once.

Chunk n covers C consecutive positions. With b_r the within-chunk inclusive cumulative log-decay
(b_0 = 0) and S_[n] the state entering the chunk:

    O_inter[r] = (q_r * exp(b_r)) S_[n]
    O_intra[r] = sum_{s <= r} (sum_i q_ri k_si exp(b_ri - b_si)) v_s
    S_[n+1]    = exp(b_C) * S_[n] + (k * exp(b_C - b))^T v

`chunk_terms` computes everything that does not need S_[n]: the intra-chunk output, the decayed
queries, the chunk decay a_n = exp(b_C) and the state increment. It is a pure function of the
chunked inputs, differentiated with `jax.vjp` in the backward pass. A per-channel gate does not
factor out of P; its parts come from `vector.vector_parts` (secondary chunking).

Every exponent is <= 0 for g <= 0, so strong decays only underflow to 0 (where the true weight
is below fp32 range anyway) and never overflow, in the forward or in the gradients; decays are
only ever accumulated within a chunk, so the length T plays no role.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from linmix.ops.common.chunks import (
    Chunked,
    Masks,
    masked_exp,
    pair_mask,
    spread,
    strict_causal,
    where_mask,
    within_chunk_sum,
)
from linmix.ops.gla import vector

_F32 = jnp.float32


class Terms(NamedTuple):
    o_intra_BHNCV: jax.Array
    q_decay_BHNCK: jax.Array
    a_BHNX: jax.Array
    dS_BHNKV: jax.Array


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
    # k_decay^T as an explicit transpose: contracting its minor axis makes this the same kind of
    # product as the others; contracting the time axis of [C, K] is several times slower on CPU.
    kT_BHNKC = jnp.swapaxes(p.k_decay_BHNCK, 3, 4)
    dS_BHNKV = jnp.einsum("bhnkc,bhncv->bhnkv", kT_BHNKC, x.v_BHNCV)
    return Terms(o_intra_BHNCV, p.q_decay_BHNCK, p.a_BHNX, dS_BHNKV)


def chunk_parts(x: Chunked, masks: Masks | None) -> Parts:
    """P, the decayed queries and keys and the chunk decays (no values needed)."""
    q_BHNCK, k_BHNCK, _, g_BHNCX = x
    same_BNRS = None if masks is None else masks.same_seg_BNRS
    if g_BHNCX is None:
        return _parts_without_gate(q_BHNCK, k_BHNCK, masks)
    if g_BHNCX.shape[-1] > 1:
        return _parts_vector(q_BHNCK, k_BHNCK, g_BHNCX, masks)
    b_BHNCX = within_chunk_sum(g_BHNCX, "inclusive")
    P_BHNRS = _intra_scalar(q_BHNCK, k_BHNCK, b_BHNCX[..., 0], same_BNRS)

    # Keys weighted by their decay to the chunk end, only those of the segment open at the end.
    # The decay to the end, sum_{j > s} g_j, is summed directly rather than taken as b_C - b_s:
    # the difference sends large cancelling gradients into b_C for keys near the chunk end (the
    # last key's exp(0) most of all), whose rounding swamps tiny gate gradients at strong decay.
    K = q_BHNCK.shape[-1]

    def over_keys(x_BHNCX: jax.Array) -> jax.Array:
        return x_BHNCX if x_BHNCX.shape[-1] == K else spread(x_BHNCX[..., 0], "...c,k->...ck", K)

    to_end_BHNCX = within_chunk_sum(g_BHNCX, "after")
    k_decay_BHNCK = k_BHNCK * over_keys(jnp.exp(to_end_BHNCX))
    k_decay_BHNCK = where_mask(masks and masks.in_last_seg_BNC, k_decay_BHNCK)
    a_BHNX = where_mask(masks and masks.keeps_state_BN, jnp.exp(b_BHNCX[:, :, :, -1]))

    # Queries decayed from the chunk start; those in a new segment must not see the carried state.
    q_decay_BHNCK = q_BHNCK * over_keys(jnp.exp(b_BHNCX))
    q_decay_BHNCK = where_mask(masks and masks.reads_state_BNC, q_decay_BHNCK)
    return Parts(P_BHNRS, q_decay_BHNCK, k_decay_BHNCK, a_BHNX)


def _parts_without_gate(q_BHNCK: jax.Array, k_BHNCK: jax.Array, masks: Masks | None) -> Parts:
    """`chunk_parts` with every decay 1: a causal mask instead of a decay matrix."""
    B, H, N, C, _ = q_BHNCK.shape
    causal_BHNRS = pair_mask(jnp.tril(jnp.ones((C, C), bool)), masks and masks.same_seg_BNRS)
    qk_BHNRS = jnp.einsum("bhnrk,bhnsk->bhnrs", q_BHNCK, k_BHNCK)
    P_BHNRS = jnp.where(causal_BHNRS, qk_BHNRS, 0.0)
    k_BHNCK = where_mask(masks and masks.in_last_seg_BNC, k_BHNCK)
    a_BHNX = where_mask(masks and masks.keeps_state_BN, jnp.ones((B, H, N, 1), _F32))
    q_decay_BHNCK = where_mask(masks and masks.reads_state_BNC, q_BHNCK)
    return Parts(P_BHNRS, q_decay_BHNCK, k_BHNCK, a_BHNX)


def _intra_scalar(
    q_BHNCK: jax.Array, k_BHNCK: jax.Array, b_BHNC: jax.Array, same_BNRS: jax.Array | None
) -> jax.Array:
    """P[r, s] = (q_r . k_s) exp(b_r - b_s) for s <= r in one segment: the decay factors out.

    The diagonal gets a constant 1 rather than exp(b_r - b_r): the latter sends two large,
    exactly cancelling gradients into b_r, whose fp32 rounding swamps the tiny true gate gradient
    when decays are strong.
    """
    C = q_BHNCK.shape[3]
    strict_BHNRS = pair_mask(strict_causal(C), same_BNRS)
    diff_BHNRS = spread(b_BHNC, "...r,s->...rs", C) - spread(b_BHNC, "...s,r->...rs", C)
    decay_BHNRS = masked_exp(diff_BHNRS, strict_BHNRS) + jnp.eye(C, dtype=_F32)[None, None, None]
    qk_BHNRS = jnp.einsum("bhnrk,bhnsk->bhnrs", q_BHNCK, k_BHNCK)
    return qk_BHNRS * decay_BHNRS


def _parts_vector(
    q_BHNCK: jax.Array, k_BHNCK: jax.Array, g_BHNCK: jax.Array, masks: Masks | None
) -> Parts:
    """`chunk_parts` for a per-channel gate (`vector.vector_parts`), with the segment masks."""
    p = vector.vector_parts(q_BHNCK, k_BHNCK, g_BHNCK)
    P_BHNRS = p.P_LRS
    if masks is not None:
        P_BHNRS = jnp.where(masks.same_seg_BNRS[:, None], P_BHNRS, 0.0)
    q_decay_BHNCK = where_mask(masks and masks.reads_state_BNC, p.q_decay_LCK)
    k_decay_BHNCK = where_mask(masks and masks.in_last_seg_BNC, p.k_decay_LCK)
    a_BHNX = where_mask(masks and masks.keeps_state_BN, p.a_LK)
    return Parts(P_BHNRS, q_decay_BHNCK, k_decay_BHNCK, a_BHNX)
