"""Chunked gated linear attention as Pallas TPU (Mosaic) kernels, forward and backward.

Engine L, every gate kind, segments and states; math per chunk in `kernel_chunk`. Grid
(batch * heads, chunks): the chunk axis is sequential ("arbitrary") and the [K, V] state lives in
VMEM scratch. The forward saves the state entering every chunk (N = T / C of them, the only
residual); the backward walks the chunks in reverse through the index maps, carrying the
gradient of the state. Blocks are [C, K] / [C, V] tiles (C a multiple of 8, K and V whole), so
they obey the (8, 128) rule. On a CPU backend the kernels run in interpret mode.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from linmix.ops.gla import kernel_chunk, kernel_io

_F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tokens per grid step (`chunk`, the op's chunk_size) and per sub-chunk for per-channel
    gates (`subchunk`, the pairs whose decays are built explicitly)."""

    chunk: int = 64
    subchunk: int = kernel_chunk.SUBCHUNK


DEFAULT_BLOCKS = BlockSizes()


class _Specs:
    """BlockSpecs of the kernel inputs for grid (bh, n); `rev` walks the chunks backwards."""

    def __init__(self, x: kernel_io.Inputs, C: int, rev: bool):
        self.C, self.H, self.N = C, x.heads, x.q.shape[1] // C
        self.kv = (x.q.shape[-1], x.v.shape[-1])
        self.rev = rev

    def chunk(self, n):
        return self.N - 1 - n if self.rev else n

    def tokens(self, D: int) -> pl.BlockSpec:
        return pl.BlockSpec((None, self.C, D), lambda bh, n: (bh, self.chunk(n), 0))

    def batch_tokens(self) -> pl.BlockSpec:
        def index(bh, n):
            return (lax.div(bh, self.H), self.chunk(n), 0)

        return pl.BlockSpec((None, self.C, 1), index)

    def row(self, per_head: bool) -> pl.BlockSpec:
        def index(bh, n):
            row = bh if per_head else lax.div(bh, self.H)
            return (row * self.N + self.chunk(n), 0, 0)

        return pl.BlockSpec((None, 1, self.C), index)

    def state(self) -> pl.BlockSpec:
        return pl.BlockSpec((None, *self.kv), lambda bh, n: (bh, 0, 0))

    def states(self) -> pl.BlockSpec:
        return pl.BlockSpec((None, None, *self.kv), lambda bh, n: (bh, self.chunk(n), 0, 0))


def _inputs(x: kernel_io.Inputs, specs: _Specs):
    """(arrays, specs) of the optional-aware kernel inputs, in the order `_unpack` reads them."""
    K, V = x.q.shape[-1], x.v.shape[-1]
    pairs = [(x.q, specs.tokens(K)), (x.k, specs.tokens(K)), (x.v, specs.tokens(V))]
    if x.g is not None:
        pairs.append((x.g, specs.tokens(x.g.shape[-1])))
    if x.g_row is not None:
        pairs.append((x.g_row, specs.row(per_head=True)))
    if x.seg_col is not None:
        pairs += [
            (x.seg_col, specs.batch_tokens()),
            (x.seg_row, specs.row(per_head=False)),
            (x.reads, specs.batch_tokens()),
            (x.inlast, specs.batch_tokens()),
        ]
    return [a for a, _ in pairs], [s for _, s in pairs]


def _unpack(x: kernel_io.Inputs, refs):
    """Chunk values (q, k, v, g, g_row, seg) from the refs, and the remaining refs."""
    q, k, v = (r[...] for r in refs[:3])
    rest = list(refs[3:])
    g = rest.pop(0)[...] if x.g is not None else None
    g_row = rest.pop(0)[...] if x.g_row is not None else None
    seg = None
    if x.seg_col is not None:
        seg = kernel_chunk.Seg(*(rest.pop(0)[...] for _ in range(4)))
    return (q, k, v, g, g_row, seg), rest


def _params(interpret: bool):
    semantics = pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary"))
    return dict(compiler_params=semantics, interpret=interpret)


def forward(x: kernel_io.Inputs, S0, scale: float, C: int, interpret: bool):
    BH, Tp, K = x.q.shape
    V = x.v.shape[-1]
    specs = _Specs(x, C, rev=False)
    arrays, in_specs = _inputs(x, specs)

    def kernel(*refs):
        (q, k, v, g, g_row, seg), rest = _unpack(x, refs)
        S0_ref, o_ref, states_ref, final_ref, S_scr = rest
        n = pl.program_id(1)

        @pl.when(n == 0)
        def _():
            S_scr[...] = S0_ref[...]

        S = S_scr[...]
        states_ref[...] = S
        o, S_next = kernel_chunk.forward(q, k, v, g, g_row, S, seg)
        o_ref[...] = (scale * o).astype(o_ref.dtype)
        S_scr[...] = S_next

        @pl.when(n == specs.N - 1)
        def _():
            final_ref[...] = S_next

    return pl.pallas_call(
        kernel,
        grid=(BH, specs.N),
        in_specs=[*in_specs, specs.state()],
        out_specs=[specs.tokens(V), specs.states(), specs.state()],
        out_shape=[
            jax.ShapeDtypeStruct((BH, Tp, V), _F32),
            jax.ShapeDtypeStruct((BH, specs.N, K, V), _F32),
            jax.ShapeDtypeStruct((BH, K, V), _F32),
        ],
        scratch_shapes=[pltpu.VMEM((K, V), _F32)],
        **_params(interpret),
    )(*arrays, S0)


def backward(x: kernel_io.Inputs, states, do, dS_final, scale: float, C: int, interpret: bool):
    BH, Tp, K = x.q.shape
    V = x.v.shape[-1]
    specs = _Specs(x, C, rev=True)
    arrays, in_specs = _inputs(x, specs)
    out_specs = [specs.tokens(K), specs.tokens(K), specs.tokens(V)]
    out_shape = [
        jax.ShapeDtypeStruct((BH, Tp, K), _F32),
        jax.ShapeDtypeStruct((BH, Tp, K), _F32),
        jax.ShapeDtypeStruct((BH, Tp, V), _F32),
    ]
    if x.g is not None:
        out_specs.append(specs.tokens(x.g.shape[-1]))
        out_shape.append(jax.ShapeDtypeStruct(x.g.shape, _F32))
    out_specs.append(specs.state())
    out_shape.append(jax.ShapeDtypeStruct((BH, K, V), _F32))

    def kernel(*refs):
        (q, k, v, g, g_row, seg), rest = _unpack(x, refs)
        do_ref, states_ref, dSf_ref, dq_ref, dk_ref, dv_ref, *rest = rest
        dg_ref = rest.pop(0) if x.g is not None else None
        dS0_ref, lam_scr = rest
        n = pl.program_id(1)

        @pl.when(n == 0)
        def _():
            lam_scr[...] = dSf_ref[...]

        do_scaled = scale * do_ref[...].astype(_F32)
        grads = kernel_chunk.backward(
            q, k, v, g, g_row, states_ref[...], lam_scr[...], do_scaled, seg
        )
        dq, dk, dv, dg, lam_prev = grads
        dq_ref[...], dk_ref[...], dv_ref[...] = dq, dk, dv
        if dg_ref is not None:
            dg_ref[...] = dg
        lam_scr[...] = lam_prev

        @pl.when(n == specs.N - 1)
        def _():
            dS0_ref[...] = lam_prev

    outs = pl.pallas_call(
        kernel,
        grid=(BH, specs.N),
        in_specs=[*in_specs, specs.tokens(V), specs.states(), specs.state()],
        out_specs=out_specs,
        out_shape=out_shape,
        scratch_shapes=[pltpu.VMEM((K, V), _F32)],
        **_params(interpret),
    )(*arrays, do, states, dS_final)
    if x.g is None:
        outs = [*outs[:3], None, outs[3]]
    return tuple(outs)


gla_pallas_tpu = kernel_io.make_op(forward, backward)
