"""What the Pallas kernels of gated linear attention share: the kernel layout of the inputs, the
segment bookkeeping, and the `jax.custom_vjp` that runs a forward and a backward kernel.

A backend module provides `forward(x, S0, scale, C, interpret) -> (o, states, S_final)` and
`backward(x, states, do, dS_final, scale, C, interpret) -> (dq, dk, dv, dg, dS0)` on `Inputs`;
`states` are the N states entering the chunks, fp32, the only residual besides the inputs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from linmix.ops.gla import chunks

_F32 = jnp.float32


class Inputs(NamedTuple):
    """Kernel layout: heads folded into the batch, time padded to N * C chunks.

    q, k [BH, Tp, K]; v [BH, Tp, V]; g [BH, Tp, X] or None; g_row [BH * N, 1, C] (scalar gates
    as rows, for the pair decays) or None; the segment arrays are per batch row (index bh // H):
    seg_col [B, Tp, 1] int32, seg_row [B * N, 1, C], reads / inlast [B, Tp, 1] fp32, or None.
    """

    q: jax.Array
    k: jax.Array
    v: jax.Array
    g: jax.Array | None
    g_row: jax.Array | None
    seg_col: jax.Array | None
    seg_row: jax.Array | None
    reads: jax.Array | None
    inlast: jax.Array | None
    heads: int


def _fold(x_BTHD: jax.Array, C: int) -> jax.Array:
    """[B, T, H, D] -> [B * H, Tp, D], zero-padded in time."""
    B, T, H, D = x_BTHD.shape
    Tp = -(-T // C) * C
    x = jnp.pad(x_BTHD, ((0, 0), (0, Tp - T), (0, 0), (0, 0)))
    return x.transpose(0, 2, 1, 3).reshape(B * H, Tp, D)


def _unfold(x: jax.Array, B: int, T: int) -> jax.Array:
    BH, Tp, D = x.shape
    return x.reshape(B, BH // B, Tp, D).transpose(0, 2, 1, 3)[:, :T]


def prepare(q, k, v, g_BTHX, segment_ids, C: int) -> Inputs:
    B, T, H, _ = q.shape
    g = None if g_BTHX is None else _fold(g_BTHX, C).astype(_F32)
    g_row = None
    if g is not None and g.shape[-1] == 1:
        g_row = g.reshape(-1, 1, C)
    seg = (None,) * 4
    if segment_ids is not None:
        masks = chunks.segment_masks(segment_ids, C)
        Tp = -(-T // C) * C
        seg_BT = jnp.pad(segment_ids.astype(jnp.int32), ((0, 0), (0, Tp - T)), mode="edge")
        seg = (
            seg_BT[..., None],
            seg_BT.reshape(-1, 1, C),
            masks.reads_state_BNC.reshape(B, Tp, 1).astype(_F32),
            masks.in_last_seg_BNC.reshape(B, Tp, 1).astype(_F32),
        )
    return Inputs(_fold(q, C), _fold(k, C), _fold(v, C), g, g_row, *seg, heads=H)


Forward = Callable[..., tuple[jax.Array, jax.Array, jax.Array]]
Backward = Callable[..., tuple[jax.Array, ...]]


def make_op(forward: Forward, backward: Backward, min_chunk: int = 1):
    """The causal chunked op `(q, k, v, g, *, scale, initial_state, segment_ids, chunk_size,
    interpret) -> (o fp32 [B, T, H, V], S_final fp32)` with the `xla.gla_chunked` contract.
    Chunks are at least `min_chunk` long (the sequence is padded)."""

    @functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
    def run(q, k, v, g, S0, seg, scale, C, interpret):
        return run_fwd(q, k, v, g, S0, seg, scale, C, interpret)[0]

    def run_fwd(q, k, v, g, S0, seg, scale, C, interpret):
        x = prepare(q, k, v, None if g is None else chunks.gate_BTHX(g, q.shape), seg, C)
        S0_fold = S0.astype(_F32).reshape(-1, *S0.shape[2:])
        o, states, S_final = forward(x, S0_fold, scale, C, interpret)
        out = (_unfold(o, q.shape[0], q.shape[1]), S_final)
        return out, (q, k, v, g, seg, states, jnp.zeros((), S0.dtype))

    def run_bwd(scale, C, interpret, residuals, cotangents):
        q, k, v, g, seg, states, S0_like = residuals
        do, dS_final = cotangents
        B, T = q.shape[:2]
        x = prepare(q, k, v, None if g is None else chunks.gate_BTHX(g, q.shape), seg, C)
        grads = backward(x, states, _fold(do, C), dS_final.astype(_F32), scale, C, interpret)
        dq, dk, dv, dg, dS0 = grads
        dq, dk, dv = (_unfold(d, B, T).astype(p.dtype) for d, p in ((dq, q), (dk, k), (dv, v)))
        if g is not None:
            dg = _unfold(dg, B, T).reshape(g.shape).astype(g.dtype)
        dS0 = dS0.reshape(B, -1, *dS0.shape[1:]).astype(S0_like.dtype)
        return dq, dk, dv, dg, dS0, None

    run.defvjp(run_fwd, run_bwd)

    def op(q, k, v, g, *, scale, initial_state, segment_ids, chunk_size, interpret):
        B, T, H, K = q.shape
        if initial_state is None:
            initial_state = jnp.zeros((B, H, K, v.shape[-1]), _F32)
        C = max(min_chunk, chunks.chunk_length(T, chunk_size))
        o, S_final = run(q, k, v, g, initial_state, segment_ids, scale, C, interpret)
        return o, S_final.reshape(B, H, K, -1)

    return op
