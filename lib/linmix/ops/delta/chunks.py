"""Per-chunk pieces of the chunked (gated) delta rule (docs/forms.md), all chunks at once.

Chunk n covers C consecutive positions; Q, K [C, K], V [C, V], beta [C] are its rows. With b_r
the within-chunk inclusive cumulative log-decay (b = 0 without a gate) and S the state entering
the chunk, the delta rule inside the chunk is S_r = e^{b_r} S + sum_{s <= r} e^{b_r - b_s} k_s^T u_s
with pseudo-values u_r = beta_r (v_r - k_r a_r S_{r-1}). Collecting the u_r gives one unit lower
triangular system (the WY / UT transform):

    Gamma_rs = exp(b_r - b_s) 1[s <= r]
    A        = strictly_lower(diag(beta) (K K^T) * Gamma)
    Tm       = (I + A)^-1                               (unit lower triangular, `triangular`)
    W        = Tm diag(beta) (K * e^b),   U = Tm diag(beta) V
    u        = U - W S
    P        = (Q K^T) * Gamma                          (diagonal included)
    O        = (Q * e^b) S + P u
    S'       = e^{b_C} S + (K * e^{b_C - b})^T u

Both chunk maps are affine in S. `chunk_terms` computes everything that does not need S:

    O  = O_intra + Q_eff S,     O_intra = P U,          Q_eff = Q * e^b - P W
    S' = M S + dS,              M = e^{b_C} I - Kd^T W,  dS = Kd^T U,     Kd = K * e^{b_C - b}

so only the small recurrence S_[n+1] = M_n S_[n] + dS_n is sequential. M_n is the product of the
chunk's C transitions a_t (I - beta_t k_t^T k_t), so it never expands (spectral norm <= 1) for
unit keys and beta in [0, 2]. `chunk_terms` is a pure function of the chunked inputs, so the
backward pass differentiates it with `jax.vjp`, all chunks at once.

Every exponent is <= 0 for g <= 0 (anti-causal differences are masked before the exp), so strong
decays only underflow to 0 and never overflow, in the forward or in the gradients.

Packed segments are masks: pairs (r, s) must share a segment (A and P, hence Tm, are block
diagonal per segment); rows not in the segment carried into the chunk never read S (zero rows
of Q * e^b and of diag(beta) (K * e^b), hence of W); the carried state survives only if the
chunk never leaves its segment; and only keys of the segment open at the chunk end write to S'.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from linmix.ops.common.chunks import Masks, spread, to_chunks, within_chunk_sum
from linmix.ops.delta.triangular import unit_lower_inverse

_F32 = jnp.float32


class Chunked(NamedTuple):
    """Inputs cut into N chunks of length C, heads before chunks (time zero-padded at the end),
    fp32. Zero padding means beta = 0, k = v = 0 and g = 0 there: the state passes unchanged."""

    q_BHNCK: jax.Array
    k_BHNCK: jax.Array
    v_BHNCV: jax.Array
    beta_BHNC: jax.Array
    g_BHNC: jax.Array | None  # None: no decay (DeltaNet)


class Terms(NamedTuple):
    """The state-independent parts of every chunk (see the module docstring)."""

    o_intra_BHNCV: jax.Array
    q_eff_BHNCK: jax.Array
    M_BHNKK: jax.Array
    dS_BHNKV: jax.Array


def chunk_inputs(
    q_BTHK: jax.Array,
    k_BTHK: jax.Array,
    v_BTHV: jax.Array,
    beta_BTH: jax.Array,
    g_BTH: jax.Array | None,
    C: int,
) -> Chunked:
    """[B, T, H, .] inputs as fp32 [B, H, N, C, .] chunks; per-token scalars as [B, H, N, C]."""
    beta_BHNC = to_chunks(beta_BTH[..., None], C)[..., 0]
    g_BHNC = None if g_BTH is None else to_chunks(g_BTH[..., None], C)[..., 0]
    return Chunked(*(to_chunks(x, C) for x in (q_BTHK, k_BTHK, v_BTHV)), beta_BHNC, g_BHNC)


def _where(mask_BN: jax.Array | None, x_BHN: jax.Array) -> jax.Array:
    """x where the [B, N, ...] mask (broadcast over heads and trailing dims) holds, else 0."""
    if mask_BN is None:
        return x_BHN
    mask = mask_BN[:, None]
    mask = mask.reshape(mask.shape + (1,) * (x_BHN.ndim - mask.ndim))
    return jnp.where(mask, x_BHN, 0.0)


def _strict_pairs(C: int, same_BNRS: jax.Array | None) -> jax.Array:
    """Pairs s < r within one segment, as a bool [B or 1, 1, N or 1, C, C] mask."""
    strict_RS = jnp.tril(jnp.ones((C, C), bool), k=-1)
    if same_BNRS is None:
        return strict_RS[None, None, None]
    return strict_RS[None, None, None] & same_BNRS[:, None]


def _masked_exp(x: jax.Array, mask: jax.Array) -> jax.Array:
    """exp(x) where mask else 0. The argument is masked too: exp of an anti-causal (positive)
    difference could overflow, and inf * 0 in the backward is NaN."""
    mask = jnp.broadcast_to(mask, x.shape)
    return jnp.where(mask, jnp.exp(jnp.where(mask, x, 0.0)), 0.0)


class _Decays(NamedTuple):
    gamma_BHNRS: jax.Array  # exp(b_r - b_s) on strict same-segment pairs
    q_decay_BHNCK: jax.Array  # Q * e^b
    k_decay_BHNCK: jax.Array  # K * e^b
    k_end_BHNCK: jax.Array  # K * e^{b_C - b}
    a_BHN: jax.Array  # e^{b_C}


def _decays(x: Chunked, masks: Masks | None) -> _Decays:
    q_BHNCK, k_BHNCK, _, _, g_BHNC = x
    B, H, N, C, _ = q_BHNCK.shape
    strict_BHNRS = _strict_pairs(C, None if masks is None else masks.same_seg_BNRS)
    if g_BHNC is None:
        gamma_BHNRS = jnp.broadcast_to(strict_BHNRS, (B, H, N, C, C)).astype(_F32)
        return _Decays(gamma_BHNRS, q_BHNCK, k_BHNCK, k_BHNCK, jnp.ones((B, H, N), _F32))
    b_BHNC = within_chunk_sum(g_BHNC[..., None], "inclusive")[..., 0]
    # The decay to the chunk end is summed directly rather than taken as b_C - b_s: that
    # difference sends large cancelling gradients into b_C (the last key's exp(0) most of
    # all), whose rounding swamps small gate gradients when decays are strong.
    to_end_BHNC = within_chunk_sum(g_BHNC[..., None], "after")[..., 0]
    diff_BHNRS = spread(b_BHNC, "...r,s->...rs", C) - spread(b_BHNC, "...s,r->...rs", C)
    # Strictly lower only: the diagonal weight is a constant 1 (added below for P), not
    # exp(b_r - b_r), whose two exactly cancelling gradients would swamp small ones.
    return _Decays(
        _masked_exp(diff_BHNRS, strict_BHNRS),
        q_BHNCK * jnp.exp(b_BHNC)[..., None],
        k_BHNCK * jnp.exp(b_BHNC)[..., None],
        k_BHNCK * jnp.exp(to_end_BHNC)[..., None],
        jnp.exp(b_BHNC[..., -1]),
    )


def _wy(x: Chunked, d: _Decays, masks: Masks | None) -> tuple[jax.Array, jax.Array]:
    """W [B, H, N, C, K] and U [B, H, N, C, V] of every chunk."""
    k_BHNCK, v_BHNCV, beta_BHNC = x.k_BHNCK, x.v_BHNCV, x.beta_BHNC
    kk_BHNRS = jnp.einsum("bhnrk,bhnsk->bhnrs", k_BHNCK, k_BHNCK)
    A_BHNRS = beta_BHNC[..., None] * kk_BHNRS * d.gamma_BHNRS
    Tm_BHNRS = unit_lower_inverse(A_BHNRS)
    # Rows in a segment that starts inside the chunk get a zero K * e^b: they must not read the
    # carried state, so their rows of W vanish (Tm is block diagonal per segment).
    reads_BNC = None if masks is None else masks.reads_state_BNC
    bk_BHNCK = beta_BHNC[..., None] * _where(reads_BNC, d.k_decay_BHNCK)
    W_BHNCK = jnp.einsum("bhnrs,bhnsk->bhnrk", Tm_BHNRS, bk_BHNCK)
    U_BHNCV = jnp.einsum("bhnrs,bhnsv->bhnrv", Tm_BHNRS, beta_BHNC[..., None] * v_BHNCV)
    return W_BHNCK, U_BHNCV


def wy_transform(x: Chunked, masks: Masks | None) -> tuple[jax.Array, jax.Array]:
    """The state-independent W, U of every chunk: the chunk's values are u = U - W S."""
    return _wy(x, _decays(x, masks), masks)


def chunk_terms(x: Chunked, masks: Masks | None) -> Terms:
    """O_intra, Q_eff, M and dS of every chunk (module docstring), with segment masks if any."""
    q_BHNCK, k_BHNCK = x.q_BHNCK, x.k_BHNCK
    K, C = q_BHNCK.shape[-1], q_BHNCK.shape[-2]
    d = _decays(x, masks)
    W_BHNCK, U_BHNCV = _wy(x, d, masks)
    qk_BHNRS = jnp.einsum("bhnrk,bhnsk->bhnrs", q_BHNCK, k_BHNCK)
    P_BHNRS = qk_BHNRS * (d.gamma_BHNRS + jnp.eye(C, dtype=_F32)[None, None, None])

    reads_BNC = None if masks is None else masks.reads_state_BNC
    o_intra_BHNCV = jnp.einsum("bhnrs,bhnsv->bhnrv", P_BHNRS, U_BHNCV)
    PW_BHNCK = jnp.einsum("bhnrs,bhnsk->bhnrk", P_BHNRS, W_BHNCK)
    q_eff_BHNCK = _where(reads_BNC, d.q_decay_BHNCK) - PW_BHNCK

    # Only keys of the segment open at the chunk end write to the state leaving it.
    k_end_BHNCK = _where(None if masks is None else masks.in_last_seg_BNC, d.k_end_BHNCK)
    a_BHN = _where(None if masks is None else masks.keeps_state_BN, d.a_BHN)
    eye_111KK = jnp.eye(K, dtype=_F32)[None, None, None]
    kW_BHNKK = jnp.einsum("bhnck,bhncj->bhnkj", k_end_BHNCK, W_BHNCK)
    M_BHNKK = a_BHN[..., None, None] * eye_111KK - kW_BHNKK
    dS_BHNKV = jnp.einsum("bhnck,bhncv->bhnkv", k_end_BHNCK, U_BHNCV)
    return Terms(o_intra_BHNCV, q_eff_BHNCK, M_BHNKK, dS_BHNKV)
