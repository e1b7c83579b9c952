"""Chunk-sequential Pallas TPU (Mosaic) kernels for a chunked engine, forward and backward.

Grid (batch * heads, chunks): the chunk axis is sequential ("arbitrary") and the [K, V] state
lives in VMEM scratch. The forward saves the state entering every chunk (N = T / C of them, the
only residual); the backward walks the chunks in reverse through the index maps, carrying the
gradient of the state. Blocks are [C, D] tiles (C a multiple of 8, feature dims whole), so they
obey the (8, 128) rule. `math` is the engine's per-chunk module (`forward(chunk, S)`,
`backward(chunk, S, lam, do)`); on a CPU backend the kernels run in interpret mode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from linmix.ops.common.layout import Chunk, Inputs, KernelGrads, Seg

_F32 = jnp.float32


class _Specs:
    """BlockSpecs of the kernel inputs for grid (bh, n); `rev` walks the chunks backwards."""

    def __init__(self, x: Inputs, C: int, rev: bool):
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


def _inputs(x: Inputs, specs: _Specs):
    """(arrays, specs) of the kernel inputs present, in the order `_unpack` reads them."""
    arrays = x.token_arrays()
    in_specs = [specs.tokens(a.shape[-1]) for a in arrays]
    if x.g_row is not None:
        arrays.append(x.g_row)
        in_specs.append(specs.row(per_head=True))
    if x.seg_col is not None:
        arrays += [x.seg_col, x.seg_row, x.reads, x.inlast]
        row = specs.row(per_head=False)
        in_specs += [specs.batch_tokens(), row, specs.batch_tokens(), specs.batch_tokens()]
    return arrays, in_specs


def _unpack(x: Inputs, refs) -> tuple[Chunk, list]:
    """This grid step's chunk values, and the remaining refs."""
    rest = list(refs)

    def take(present: bool):
        return rest.pop(0)[...] if present else None

    q, k, v = take(True), take(True), take(True)
    g, beta = take(x.g is not None), take(x.beta is not None)
    g_row = take(x.g_row is not None)
    seg = None
    if x.seg_col is not None:
        seg = Seg(*(take(True) for _ in range(4)))
    return Chunk(q, k, v, g, g_row, beta, seg), rest


def _params(interpret: bool) -> dict:
    semantics = pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary"))
    return dict(compiler_params=semantics, interpret=interpret)


def forward(x: Inputs, S0, scale: float, C: int, interpret: bool, math, states: bool = True):
    """Returns (o [BH, Tp, V] fp32, states entering each chunk [BH, N, K, V], final state);
    with states=False (inference) no chunk state is written and states is None."""
    BH, Tp, K = x.q.shape
    V = x.v.shape[-1]
    specs = _Specs(x, C, rev=False)
    arrays, in_specs = _inputs(x, specs)

    def kernel(*refs):
        chunk, (S0_ref, o_ref, *states_ref, final_ref, S_scr) = _unpack(x, refs)
        n = pl.program_id(1)

        @pl.when(n == 0)
        def _():
            S_scr[...] = S0_ref[...]

        S = S_scr[...]
        if states:
            states_ref[0][...] = S
        o, S_next = math.forward(chunk, S)
        o_ref[...] = scale * o
        S_scr[...] = S_next

        @pl.when(n == specs.N - 1)
        def _():
            final_ref[...] = S_next

    chunk_states = [jax.ShapeDtypeStruct((BH, specs.N, K, V), _F32)] if states else []
    o, *chunk_states, final = pl.pallas_call(
        kernel,
        grid=(BH, specs.N),
        in_specs=[*in_specs, specs.state()],
        out_specs=[specs.tokens(V), *([specs.states()] if states else []), specs.state()],
        out_shape=[
            jax.ShapeDtypeStruct((BH, Tp, V), _F32),
            *chunk_states,
            jax.ShapeDtypeStruct((BH, K, V), _F32),
        ],
        scratch_shapes=[pltpu.VMEM((K, V), _F32)],
        **_params(interpret),
    )(*arrays, S0)
    return o, chunk_states[0] if states else None, final


def backward(x: Inputs, states, do, dS_final, scale: float, C: int, interpret: bool, math):
    """`layout.KernelGrads`, fp32, in the kernel layout."""
    BH, Tp, K = x.q.shape
    V = x.v.shape[-1]
    specs = _Specs(x, C, rev=True)
    arrays, in_specs = _inputs(x, specs)
    grads_like = x.token_arrays()  # dq, dk, dv, [dg], [dbeta] have the inputs' shapes
    n_in = len(arrays) + 3

    def kernel(*refs):
        outs = refs[n_in:]
        chunk, (do_ref, states_ref, dSf_ref) = _unpack(x, refs[:n_in])
        *grad_refs, dS0_ref, lam_scr = outs
        n = pl.program_id(1)

        @pl.when(n == 0)
        def _():
            lam_scr[...] = dSf_ref[...]

        do_scaled = scale * do_ref[...].astype(_F32)
        grads = math.backward(chunk, states_ref[...], lam_scr[...], do_scaled)
        values = [d for d in grads[:5] if d is not None]
        for ref, value in zip(grad_refs, values, strict=True):
            ref[...] = value
        lam_scr[...] = grads.lam_prev

        @pl.when(n == specs.N - 1)
        def _():
            dS0_ref[...] = grads.lam_prev

    outs = pl.pallas_call(
        kernel,
        grid=(BH, specs.N),
        in_specs=[*in_specs, specs.tokens(V), specs.states(), specs.state()],
        out_specs=[*(specs.tokens(a.shape[-1]) for a in grads_like), specs.state()],
        out_shape=[
            *(jax.ShapeDtypeStruct(a.shape, _F32) for a in grads_like),
            jax.ShapeDtypeStruct((BH, K, V), _F32),
        ],
        scratch_shapes=[pltpu.VMEM((K, V), _F32)],
        **_params(interpret),
    )(*arrays, do, states, dS_final)
    return _with_nones(x, outs)


def _with_nones(x: Inputs, outs) -> KernelGrads:
    """The gradients with None for the inputs the call does not have."""
    outs = list(outs)
    dq, dk, dv = outs[:3]
    rest = outs[3:]
    dg = rest.pop(0) if x.g is not None else None
    dbeta = rest.pop(0) if x.beta is not None else None
    return KernelGrads(dq, dk, dv, dg, dbeta, rest[0])
