"""One chunk of the (gated) delta rule on 2-D tiles, forward and backward: the body of the
Pallas kernel runners (`linmix.ops.kernels`), which carry the state from chunk to chunk.

The forward is the WY / UT form of `chunks.py` (docs/forms.md) for one chunk and a known
entering state S:

    Gamma = exp(b_r - b_s) on strict same-segment pairs,   A = beta (K K^T) * Gamma
    Tm = (I + A)^-1 (forward substitution),   W = Tm (beta K e^b),   U = Tm (beta V)
    u = U - W S,   O = (Q e^b) S + ((Q K^T) * (Gamma + I)) u,   S' = e^{b_C} S + (K e^{b_C-b})^T u

The backward differentiates that chunk function with `jax.vjp` inside the kernel (the trace
holds only plain array ops; (I + A)^-1 has the closed-form gradient -Tm^T dTm Tm^T), so the
kernel's gradients have the same formulation, and numerics, as the XLA form's. All math fp32.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from linmix.ops.common.chunks import masked_exp
from linmix.ops.common.layout import Chunk, Grads, Seg
from linmix.ops.common.tiles import dot, strict_mask, tri

_F32 = jnp.float32


def _inverse(A: jax.Array) -> jax.Array:
    """(I + A)^-1 for a strictly lower triangular [C, C] A, by forward substitution (rows
    replaced by selects: kernels have no dynamic row updates of values)."""
    C = A.shape[0]
    rows = lax.broadcasted_iota(jnp.int32, (C, C), 0)
    cols = lax.broadcasted_iota(jnp.int32, (C, C), 1)
    eye = (rows == cols).astype(_F32)

    def row(r, Tm):
        a_r = jnp.sum(jnp.where((rows == r) & (cols < r), A, 0.0), axis=0, keepdims=True)
        e_r = jnp.sum(jnp.where(rows == r, eye, 0.0), axis=0, keepdims=True)
        return jnp.where(rows == r, e_r - dot(a_r, Tm, exact=True), Tm)

    return lax.fori_loop(1, C, row, eye)


@jax.custom_vjp
def _inverse_diff(A: jax.Array) -> jax.Array:
    return _inverse(A)


def _inverse_fwd(A):
    Tm = _inverse(A)
    return Tm, Tm


def _inverse_bwd(Tm, dTm):
    C = Tm.shape[0]
    rows = lax.broadcasted_iota(jnp.int32, (C, C), 0)
    cols = lax.broadcasted_iota(jnp.int32, (C, C), 1)
    dA = -dot(Tm, dot(dTm, Tm, tb=True, exact=True), ta=True, exact=True)
    return (jnp.where(cols < rows, dA, 0.0),)


_inverse_diff.defvjp(_inverse_fwd, _inverse_bwd)


def _chunk(q, k, v, beta, g, g_row, S, seg: Seg | None, inverse):
    """(o unscaled [C, V], S_next [K, V]) of one chunk; see the module docstring."""
    C = q.shape[0]
    strict = strict_mask(C, seg)
    eye = (lax.broadcasted_iota(jnp.int32, (C, C), 0) == lax.broadcasted_iota(
        jnp.int32, (C, C), 1)).astype(_F32)  # fmt: skip
    if g is None:
        gamma = strict.astype(_F32)
        q_decay, k_decay, k_end, a = q, k, k, jnp.ones((1, 1), _F32)
    else:
        b = dot(tri(C, "incl"), g, exact=True)
        b_row = dot(g_row, tri(C, "incl"), tb=True, exact=True)
        to_end = dot(tri(C, "after"), g, exact=True)
        gamma = masked_exp(b - b_row, strict)
        q_decay, k_decay, k_end = q * jnp.exp(b), k * jnp.exp(b), k * jnp.exp(to_end)
        a = jnp.exp(dot(jnp.ones((1, C), _F32), g, exact=True))
    if seg is not None:
        last = lax.broadcasted_iota(jnp.int32, seg.reads.shape, 0) == C - 1
        a = a * jnp.sum(jnp.where(last, seg.reads, 0.0), axis=0, keepdims=True)
        q_decay, k_decay, k_end = q_decay * seg.reads, k_decay * seg.reads, k_end * seg.inlast

    Tm = inverse(beta * dot(k, k, tb=True) * gamma)
    W = dot(Tm, beta * k_decay)
    u = dot(Tm, beta * v) - dot(W, S)
    o = dot(q_decay, S) + dot(dot(q, k, tb=True) * (gamma + eye), u)
    return o, a * S + dot(k_end, u, ta=True)


def _as_column(row: jax.Array) -> jax.Array:
    """[1, C] -> [C, 1] with a select and a sum (no transpose)."""
    C = row.shape[1]
    rows = lax.broadcasted_iota(jnp.int32, (C, C), 0)
    cols = lax.broadcasted_iota(jnp.int32, (C, C), 1)
    return jnp.sum(jnp.where(rows == cols, row, 0.0), axis=1, keepdims=True)


class ChunkMath(NamedTuple):
    """The per-chunk math the kernel runners (`linmix.ops.kernels`) call."""

    def forward(self, c: Chunk, S: jax.Array) -> tuple[jax.Array, jax.Array]:
        args = _fp32(c)
        return _chunk(*args, S, c.seg, _inverse)

    def backward(self, c: Chunk, S: jax.Array, lam: jax.Array, do: jax.Array) -> Grads:
        q, k, v, beta, g, g_row = _fp32(c)

        def f(q, k, v, beta, g, g_row, S):
            return _chunk(q, k, v, beta, g, g_row, S, c.seg, _inverse_diff)

        _, vjp = jax.vjp(f, q, k, v, beta, g, g_row, S)
        dq, dk, dv, dbeta, dg, dg_row, lam_prev = vjp((do, lam))
        if g is not None:
            dg = dg + _as_column(dg_row)
        return Grads(dq, dk, dv, dg, dbeta, lam_prev)


def _fp32(c: Chunk):
    def f(x):
        return None if x is None else x.astype(_F32)

    return f(c.q), f(c.k), f(c.v), f(c.beta), f(c.g), f(c.g_row)
