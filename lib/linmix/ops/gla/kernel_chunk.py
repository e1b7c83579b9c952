"""One chunk of gated linear attention, forward and backward, on 2-D tiles: the body of the
Pallas kernel runners (`linmix.ops.kernels`), which carry the state from chunk to chunk.

Notation (docs/forms.md): a chunk holds C tokens; q, k [C, K], v [C, V], log-gates g [C, X]
(X = 1 scalar, X = K per channel; no gate is g = None); S [K, V] the state entering the chunk,
lam [K, V] the gradient of the state leaving it; b the inclusive within-chunk cumulative
log-decay, e_s = sum_{j > s} g_j the decay from key s to the chunk end.

    o       = (q exp(b)) S + P v,     P[r, s] = sum_i q_ri k_si exp(b_ri - b_si), s <= r
    S_next  = exp(b_C) S + (k exp(e))^T v

The backward is written out by hand. The gate gradient is assembled from terms that each carry
at least one decay factor (never from q dq - k dk, whose diagonal terms cancel), so it stays
accurate when decays are strong:

    dg_j = sum_{r >= j} [q dq_inter + q dq_strict - k dk_strict]_r
           + sum_{s < j} [k dk_state]_s + exp(b_C) sum_V(lam * S)

Per-channel gates are computed in sub-chunks of c tokens: pairs inside a sub-chunk use an
explicit [c, c, K] decay tensor, pairs across sub-chunks meet at the start of the later one, so
every exponent is <= 0. Segment masks (packed documents) come as `layout.Seg`; all math is fp32.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from linmix.ops.common.chunks import masked_exp
from linmix.ops.common.layout import Chunk, Grads, Seg
from linmix.ops.common.tiles import dot, iota, strict_mask, tri

_F32 = jnp.float32
SUBCHUNK = 16


class ChunkMath(NamedTuple):
    """The per-chunk math the kernel runners (`linmix.ops.kernels`) call; `subchunk` is the
    sub-chunk length for per-channel gates (a chunk of its own length: no secondary chunking)."""

    subchunk: int = SUBCHUNK

    def forward(self, c: Chunk, S: jax.Array) -> tuple[jax.Array, jax.Array]:
        return _forward(c.q, c.k, c.v, c.g, c.g_row, S, c.seg, self.subchunk)

    def backward(self, c: Chunk, S: jax.Array, lam: jax.Array, do: jax.Array) -> Grads:
        dq, dk, dv, dg, lam_prev = _backward(
            c.q, c.k, c.v, c.g, c.g_row, S, lam, do, c.seg, self.subchunk
        )
        return Grads(dq, dk, dv, dg, None, lam_prev)


class _Gate(NamedTuple):
    b: jax.Array | float  # [C, X] inclusive cumulative log-decay (0.0 without a gate)
    e: jax.Array | float  # [C, X] decay to the chunk end
    a_col: jax.Array  # [K, 1] (or [1, 1]) chunk decay, zero where the state does not survive
    a_row: jax.Array  # [1, X]


def _gate(g: jax.Array | None, K: int, seg: Seg | None) -> _Gate:
    keeps = 1.0
    if seg is not None:  # the last query still reads the carried state (no value slicing)
        last = lax.broadcasted_iota(jnp.int32, seg.reads.shape, 0) == seg.reads.shape[0] - 1
        keeps = jnp.sum(jnp.where(last, seg.reads, 0.0), axis=0, keepdims=True)
    if g is None:
        one = jnp.ones((1, 1), _F32) * keeps
        return _Gate(0.0, 0.0, one, one)
    C = g.shape[0]
    b = dot(tri(C, "incl"), g, exact=True)
    e = dot(tri(C, "after"), g, exact=True)
    total_col = dot(g, jnp.ones((C, 1), _F32), ta=True, exact=True)  # [X, 1]
    total_row = dot(jnp.ones((1, C), _F32), g, exact=True)  # [1, X]
    return _Gate(b, e, jnp.exp(total_col) * keeps, jnp.exp(total_row) * keeps)


def _io_decays(q, k, gate: _Gate, seg: Seg | None):
    """Queries decayed from the chunk start and keys decayed to its end, segment-masked."""
    qd = q * jnp.exp(gate.b) if isinstance(gate.b, jax.Array) else q
    kd = k * jnp.exp(gate.e) if isinstance(gate.e, jax.Array) else k
    if seg is not None:
        qd, kd = qd * seg.reads, kd * seg.inlast
    return qd, kd


def _scalar_decay(g_row: jax.Array | None, b: jax.Array | float, mask: jax.Array) -> jax.Array:
    """exp(b_r - b_s) on strict same-segment pairs, else 0 (the mask itself without a gate)."""
    if g_row is None:
        return mask.astype(_F32)
    C = mask.shape[0]
    b_row = dot(g_row, tri(C, "incl"), tb=True, exact=True)  # [1, C]
    return masked_exp(b - b_row, mask)


def _forward(q, k, v, g, g_row, S, seg: Seg | None, subchunk: int):
    """One chunk of the forward pass. Returns (o [C, V] unscaled, S_next [K, V])."""
    q, k, v = (x.astype(_F32) for x in (q, k, v))
    gate = _gate(None if g is None else g.astype(_F32), q.shape[1], seg)
    qd, kd = _io_decays(q, k, gate, seg)
    o = dot(qd, S) + jnp.sum(q * k, axis=1, keepdims=True) * v
    if g is not None and g.shape[1] > 1:
        o = o + _vector_pairs_forward(q, k, v, gate.b, g.astype(_F32), seg, subchunk)
    else:
        mask = strict_mask(q.shape[0], seg)
        decay = _scalar_decay(None if g_row is None else g_row.astype(_F32), gate.b, mask)
        o = o + dot(dot(q, k, tb=True) * decay, v)
    return o, gate.a_col * S + dot(kd, v, ta=True)


def _backward(q, k, v, g, g_row, S, lam, do, seg: Seg | None, subchunk: int):
    """One chunk of the backward pass; `do` is the output cotangent times the scale.

    Returns (dq, dk, dv, dg or None, lam_prev), lam_prev the gradient of the entering state.
    """
    q, k, v, do = (x.astype(_F32) for x in (q, k, v, do))
    g = None if g is None else g.astype(_F32)
    gate = _gate(g, q.shape[1], seg)
    qd, kd = _io_decays(q, k, gate, seg)
    dq_inter = dot(do, S, tb=True)
    if isinstance(gate.b, jax.Array):
        dq_inter = dq_inter * jnp.exp(gate.b)
    dk_state = dot(v, lam, tb=True)
    if isinstance(gate.e, jax.Array):
        dk_state = dk_state * jnp.exp(gate.e)
    if seg is not None:
        dq_inter, dk_state = dq_inter * seg.reads, dk_state * seg.inlast
    dv = dot(kd, lam)
    if g is not None and g.shape[1] > 1:
        pairs = _vector_pairs_backward(q, k, v, do, gate.b, g, seg, subchunk)
        dq_strict, dk_strict, dv_pairs = pairs
    else:
        mask = strict_mask(q.shape[0], seg)
        decay = _scalar_decay(None if g_row is None else g_row.astype(_F32), gate.b, mask)
        w = dot(do, v, tb=True) * decay
        dq_strict, dk_strict = dot(w, k), dot(w, q, ta=True)
        dv_pairs = dot(dot(q, k, tb=True) * decay, do, ta=True)
    diag = jnp.sum(do * v, axis=1, keepdims=True)
    dq = dq_inter + dq_strict + diag * k
    dk = dk_state + dk_strict + diag * q
    dv = dv + dv_pairs + jnp.sum(q * k, axis=1, keepdims=True) * do
    lam_prev = gate.a_col * lam + dot(qd, do, ta=True)

    dg = None
    if g is not None:
        C, X = g.shape
        from_end = q * (dq_inter + dq_strict) - k * dk_strict
        from_start = k * dk_state
        if X == 1:
            from_end = jnp.sum(from_end, axis=1, keepdims=True)
            from_start = jnp.sum(from_start, axis=1, keepdims=True)
        da_row = dot(jnp.ones((1, S.shape[1]), _F32), lam * S, tb=True)  # [1, K]
        if X == 1:
            da_row = jnp.sum(da_row, axis=1, keepdims=True)
        dg = (
            dot(tri(C, "incl"), from_end, ta=True, exact=True)
            + dot(tri(C, "strict"), from_start, exact=True)
            + gate.a_row * da_row
        )
    return dq, dk, dv, dg, lam_prev


class _Sub(NamedTuple):
    """Per-channel decays in sub-chunk coordinates."""

    c: int
    loc: jax.Array  # [C, K] cumulative log-decay from the start of each token's sub-chunk
    rho: jax.Array  # [C, K] b at the end of the previous sub-chunk (the reference point)


def _sub(g: jax.Array, b: jax.Array, subchunk: int) -> _Sub:
    C = g.shape[0]
    c = min(subchunk, C)
    if c == C:  # one sub-chunk: b itself, no reference point (and no value slicing)
        return _Sub(C, b, jnp.zeros_like(b))
    r, s = iota(C)
    block_incl = ((s <= r) & (lax.div(s, c) == lax.div(r, c))).astype(_F32)
    loc = dot(block_incl, g, exact=True)
    return _Sub(c, loc, b - loc)


def _diag_block(q_i, k_i, loc_i, col_i):
    """Strict pairs inside one sub-chunk: the [c, c, K] decay tensor and the [c, c] mask."""
    c = q_i.shape[0]
    r, s = iota(c)
    mask3 = (s < r)[:, :, None]
    if col_i is not None:
        mask3 = mask3 & (col_i[:, None, :] == col_i[None, :, :])
    E = masked_exp(loc_i[:, None, :] - loc_i[None, :, :], mask3)
    return E, mask3[:, :, 0]


def _earlier_keys(k, b, sub: _Sub, i: int):
    """Keys of the sub-chunks before sub-chunk i, decayed to its start (others zero)."""
    C = k.shape[0]
    start = i * sub.c
    rows = lax.broadcasted_iota(jnp.int32, (C, 1), 0) < start
    rho = sub.rho[start : start + 1, :]
    return k * masked_exp(rho - b, rows)


def _off_mask(c: int, C: int, i: int, seg: Seg | None):
    """[c, C] mask of the keys before sub-chunk i in the queries' segment (queries of rows i)."""
    _, s = iota(c, C)
    mask = s < i * c
    if seg is not None:
        mask = mask & (seg.col[i * c : (i + 1) * c] == seg.row)
    return mask


def _vector_pairs_forward(q, k, v, b, g, seg: Seg | None, subchunk: int):
    """sum_{s < r} P[r, s] v_s for per-channel gates (see the module docstring)."""
    sub = _sub(g, b, subchunk)
    c, C = sub.c, q.shape[0]
    rows = []
    for i in range(C // c):
        R = slice(i * c, (i + 1) * c) if c < C else slice(None)
        col_i = None if seg is None else seg.col[R]
        E, _ = _diag_block(q[R], k[R], sub.loc[R], col_i)
        P = jnp.sum(q[R][:, None, :] * k[R][None, :, :] * E, axis=2)
        o_i = dot(P, v[R])
        if i > 0:
            A = dot(q[R] * jnp.exp(sub.loc[R]), _earlier_keys(k, b, sub, i), tb=True)
            o_i = o_i + dot(jnp.where(_off_mask(c, C, i, seg), A, 0.0), v)
        rows.append(o_i)
    return _rows(rows)


def _vector_pairs_backward(q, k, v, do, b, g, seg: Seg | None, subchunk: int):
    """Gradients of the strict pair term: (dq_strict, dk_strict, dv_pairs)."""
    sub = _sub(g, b, subchunk)
    c, C = sub.c, q.shape[0]
    dq_rows, dk_rows, dv_rows = [], [], []
    dk_off = jnp.zeros_like(k)
    dv_off = jnp.zeros_like(v)
    for i in range(C // c):
        R = slice(i * c, (i + 1) * c) if c < C else slice(None)
        col_i = None if seg is None else seg.col[R]
        E, mask = _diag_block(q[R], k[R], sub.loc[R], col_i)
        P = jnp.sum(q[R][:, None, :] * k[R][None, :, :] * E, axis=2)
        dv_rows.append(dot(P, do[R], ta=True))
        W = jnp.where(mask, dot(do[R], v[R], tb=True), 0.0)[:, :, None] * E
        dq_i = jnp.sum(W * k[R][None, :, :], axis=1)
        dk_rows.append(jnp.sum(W * q[R][:, None, :], axis=0))
        if i > 0:
            q_ref = q[R] * jnp.exp(sub.loc[R])
            k_ref = _earlier_keys(k, b, sub, i)
            off = _off_mask(c, C, i, seg)
            A = jnp.where(off, dot(q_ref, k_ref, tb=True), 0.0)
            dv_off = dv_off + dot(A, do[R], ta=True)
            dA = jnp.where(off, dot(do[R], v, tb=True), 0.0)
            dq_i = dq_i + jnp.exp(sub.loc[R]) * dot(dA, k_ref)
            dk_off = dk_off + _key_grad(dA, q_ref, k, b, sub, i)
        dq_rows.append(dq_i)
    return _rows(dq_rows), _rows(dk_rows) + dk_off, _rows(dv_rows) + dv_off


def _rows(blocks: list[jax.Array]) -> jax.Array:
    return blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=0)


def _key_grad(dA, q_ref, k, b, sub: _Sub, i: int):
    """d/dk_s of sum_{r in sub-chunk i} dA[r, s] (q_ref_r . k_s exp(rho_i - b_s))."""
    decay = _earlier_keys(jnp.ones_like(k), b, sub, i)
    return decay * dot(dA, q_ref, ta=True)
