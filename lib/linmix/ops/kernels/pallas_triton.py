"""Chunk-sequential Pallas GPU kernels (Triton lowering) for a chunked engine, fwd and bwd.

The per-chunk math is the engine's (`math.forward`, `math.backward`, as for the TPU kernels),
organised for a GPU: the grid is one program per (batch, head), unordered, so each program walks
its chunks in a `fori_loop` with the [K, V] state as the loop carry, loading [C, D] tiles with
`pl.ds`. The forward stores the state entering every chunk for the backward, which walks the
chunks in reverse. Feature dims are zero-padded to powers of two >= 16 (exact: padded keys and
values add nothing; dot dims below 16 are wrong on GPUs). On a CPU backend the kernels run in
interpret mode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from linmix.ops.common.layout import Chunk, Inputs, KernelGrads, LaunchConfig, Seg, triton_dim

_F32 = jnp.float32
PALLAS_TRITON_LAUNCH = LaunchConfig(num_warps=4, num_stages=1)


def _params(interpret: bool) -> dict:
    if interpret:
        return dict(interpret=True)
    from jax.experimental.pallas import triton as pltriton

    launch = PALLAS_TRITON_LAUNCH
    params = pltriton.CompilerParams(num_warps=launch.num_warps, num_stages=launch.num_stages)
    return dict(compiler_params=params)


def _pad_last(x: jax.Array, size: int) -> jax.Array:
    if x.shape[-1] == size:
        return x
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, size - x.shape[-1])])


def _pad_state(S: jax.Array, K: int, V: int) -> jax.Array:
    return jnp.pad(S, ((0, 0), (0, K - S.shape[1]), (0, V - S.shape[2])))


def _padded(x: Inputs) -> Inputs:
    K, V = triton_dim(x.q.shape[-1]), triton_dim(x.v.shape[-1])
    g = x.g if x.g is None or x.g.shape[-1] == 1 else _pad_last(x.g, K)
    return x._replace(q=_pad_last(x.q, K), k=_pad_last(x.k, K), v=_pad_last(x.v, V), g=g)


class _Layout:
    """Whole-sequence BlockSpecs per program (bh), the inputs present, and chunk loads."""

    def __init__(self, x: Inputs, C: int):
        self.x, self.C = x, C
        self.BH, self.Tp, self.K = x.q.shape
        self.V, self.N, self.H = x.v.shape[-1], x.q.shape[1] // C, x.heads

    def per_head(self, *shape) -> pl.BlockSpec:
        return pl.BlockSpec((None, *shape), lambda bh: (bh,) + (0,) * len(shape))

    def per_row(self, *shape) -> pl.BlockSpec:
        return pl.BlockSpec((None, *shape), lambda bh: (lax.div(bh, self.H),) + (0,) * len(shape))

    def inputs(self):
        x, N, C = self.x, self.N, self.C
        arrays = x.token_arrays()
        specs = [self.per_head(self.Tp, a.shape[-1]) for a in arrays]
        if x.g_row is not None:
            arrays.append(x.g_row.reshape(self.BH, N, C))
            specs.append(self.per_head(N, C))
        if x.seg_col is not None:
            arrays += [x.seg_col, x.seg_row.reshape(-1, N, C), x.reads, x.inlast]
            specs += [self.per_row(self.Tp, 1), self.per_row(N, C)]
            specs += [self.per_row(self.Tp, 1), self.per_row(self.Tp, 1)]
        return arrays, specs

    def load(self, refs, n) -> tuple[Chunk, list]:
        """Chunk n's values, and the remaining refs."""
        x, tok = self.x, pl.ds(n * self.C, self.C)
        rest = list(refs)

        def take(present: bool, index=tok):
            return rest.pop(0)[index, :] if present else None

        q, k, v = take(True), take(True), take(True)
        g, beta = take(x.g is not None), take(x.beta is not None)
        g_row = take(x.g_row is not None, pl.ds(n, 1))
        seg = None
        if x.seg_col is not None:
            col, row = take(True), take(True, pl.ds(n, 1))
            seg = Seg(col, row, take(True), take(True))
        return Chunk(q, k, v, g, g_row, beta, seg), rest


def forward(x: Inputs, S0, scale: float, C: int, interpret: bool, math, states: bool = True):
    """Returns (o [BH, Tp, V] fp32, states entering each chunk (padded dims), final state);
    with states=False (inference) no chunk state is written and states is None."""
    K0, V0 = x.q.shape[-1], x.v.shape[-1]
    lay = _Layout(_padded(x), C)
    arrays, in_specs = lay.inputs()
    K, V, N = lay.K, lay.V, lay.N

    def kernel(*refs):
        n_out = 3 if states else 2
        refs, (S0_ref, o_ref, *states_ref, final_ref) = refs[: -n_out - 1], refs[-n_out - 1 :]

        def body(n, S):
            chunk, _ = lay.load(refs, n)
            if states:
                states_ref[0][pl.ds(n, 1), :, :] = S[None]
            o, S_next = math.forward(chunk, S)
            o_ref[pl.ds(n * C, C), :] = scale * o
            return S_next

        final_ref[...] = lax.fori_loop(0, N, body, S0_ref[...].astype(_F32))

    chunk_states = [jax.ShapeDtypeStruct((lay.BH, N, K, V), _F32)] if states else []
    o, *chunk_states, final = pl.pallas_call(
        kernel,
        grid=(lay.BH,),
        in_specs=[*in_specs, lay.per_head(K, V)],
        out_specs=[
            lay.per_head(lay.Tp, V),
            *([lay.per_head(N, K, V)] if states else []),
            lay.per_head(K, V),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((lay.BH, lay.Tp, V), _F32),
            *chunk_states,
            jax.ShapeDtypeStruct((lay.BH, K, V), _F32),
        ],
        **_params(interpret),
    )(*arrays, _pad_state(S0, K, V))
    return o[..., :V0], chunk_states[0] if states else None, final[:, :K0, :V0]


def backward(x: Inputs, states, do, dS_final, scale: float, C: int, interpret: bool, math):
    """`layout.KernelGrads`, fp32, in the kernel layout."""
    K0, V0 = x.q.shape[-1], x.v.shape[-1]
    lay = _Layout(_padded(x), C)
    arrays, in_specs = lay.inputs()
    K, V, N, Tp = lay.K, lay.V, lay.N, lay.Tp
    grads_like = lay.x.token_arrays()
    n_in = len(arrays) + 3

    def kernel(*refs):
        *grad_refs, dS0_ref = refs[n_in:]
        *refs, do_ref, states_ref, dSf_ref = refs[:n_in]

        def body(i, lam):
            n = N - 1 - i
            chunk, _ = lay.load(refs, n)
            do_n = scale * do_ref[pl.ds(n * C, C), :].astype(_F32)
            S = states_ref[pl.ds(n, 1), :, :][0]
            grads = math.backward(chunk, S, lam, do_n)
            values = [d for d in grads[:5] if d is not None]
            for ref, value in zip(grad_refs, values, strict=True):
                ref[pl.ds(n * C, C), :] = value
            return grads.lam_prev

        dS0_ref[...] = lax.fori_loop(0, N, body, dSf_ref[...])

    outs = pl.pallas_call(
        kernel,
        grid=(lay.BH,),
        in_specs=[*in_specs, lay.per_head(Tp, V), lay.per_head(N, K, V), lay.per_head(K, V)],
        out_specs=[*(lay.per_head(Tp, a.shape[-1]) for a in grads_like), lay.per_head(K, V)],
        out_shape=[
            *(jax.ShapeDtypeStruct(a.shape, _F32) for a in grads_like),
            jax.ShapeDtypeStruct((lay.BH, K, V), _F32),
        ],
        **_params(interpret),
    )(*arrays, _pad_last(do, V), states, _pad_state(dS_final, K, V))
    outs = list(outs)
    dq, dk, dv = outs[0][..., :K0], outs[1][..., :K0], outs[2][..., :V0]
    rest = outs[3:]
    dg = None
    if x.g is not None:
        dg = rest.pop(0)[..., : x.g.shape[-1]]
    dbeta = rest.pop(0) if x.beta is not None else None
    return KernelGrads(dq, dk, dv, dg, dbeta, rest[0][:, :K0, :V0])
