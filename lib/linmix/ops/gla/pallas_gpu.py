"""Chunked gated linear attention as Pallas GPU kernels (Triton lowering), forward and backward.

Same math as the TPU kernels (`kernel_chunk`), organised for a GPU: the grid is one program per
(batch, head), unordered, so each program walks its chunks in a `fori_loop` with the [K, V]
state as the loop carry, loading [C, K] / [C, V] tiles with `pl.ds`. The forward stores the
state entering every chunk for the backward, which walks the chunks in reverse. Feature dims are
zero-padded to powers of two (exact: padded keys and values add nothing); dot dims must be
>= 16, so a chunk holds 16 tokens or more. Per-channel gates use one sub-chunk per chunk (the
Triton lowering has no value slicing) and chunks of 16. On a CPU backend the kernels run in
interpret mode.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from linmix.ops.gla import kernel_chunk, kernel_io

_F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """Triton launch parameters of both kernels (ignored in interpret mode)."""

    num_warps: int = 4
    num_stages: int = 1


DEFAULT_LAUNCH = LaunchConfig()


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _pad_last(x: jax.Array | None, size: int) -> jax.Array | None:
    if x is None or x.shape[-1] == size:
        return x
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, size - x.shape[-1])])


def _params(interpret: bool) -> dict:
    if interpret:
        return dict(interpret=True)
    from jax.experimental.pallas import triton as pltriton

    launch = DEFAULT_LAUNCH
    params = pltriton.CompilerParams(num_warps=launch.num_warps, num_stages=launch.num_stages)
    return dict(compiler_params=params)


class _Layout:
    """Whole-sequence BlockSpecs per program (bh) and the optional-aware input list."""

    def __init__(self, x: kernel_io.Inputs, C: int):
        self.x, self.C = x, C
        self.BH, self.Tp, self.K = x.q.shape
        self.V, self.N, self.H = x.v.shape[-1], x.q.shape[1] // C, x.heads

    def per_head(self, *shape) -> pl.BlockSpec:
        return pl.BlockSpec((None, *shape), lambda bh: (bh,) + (0,) * len(shape))

    def per_row(self, *shape) -> pl.BlockSpec:
        return pl.BlockSpec((None, *shape), lambda bh: (lax.div(bh, self.H),) + (0,) * len(shape))

    def inputs(self):
        x, N, C = self.x, self.N, self.C
        pairs = [
            (x.q, self.per_head(self.Tp, self.K)),
            (x.k, self.per_head(self.Tp, self.K)),
            (x.v, self.per_head(self.Tp, self.V)),
        ]
        if x.g is not None:
            pairs.append((x.g, self.per_head(self.Tp, x.g.shape[-1])))
        if x.g_row is not None:
            pairs.append((x.g_row.reshape(self.BH, N, C), self.per_head(N, C)))
        if x.seg_col is not None:
            pairs += [
                (x.seg_col, self.per_row(self.Tp, 1)),
                (x.seg_row.reshape(-1, N, C), self.per_row(N, C)),
                (x.reads, self.per_row(self.Tp, 1)),
                (x.inlast, self.per_row(self.Tp, 1)),
            ]
        return [a for a, _ in pairs], [s for _, s in pairs]

    def load(self, refs, n):
        """Chunk n's values (q, k, v, g, g_row, seg) and the remaining refs."""
        x, C = self.x, self.C
        tok = pl.ds(n * C, C)
        q, k, v = (r[tok, :] for r in refs[:3])
        rest = list(refs[3:])
        g = rest.pop(0)[tok, :] if x.g is not None else None
        g_row = rest.pop(0)[pl.ds(n, 1), :] if x.g_row is not None else None
        seg = None
        if x.seg_col is not None:
            col, row, reads, inlast = (rest.pop(0) for _ in range(4))
            seg = kernel_chunk.Seg(col[tok, :], row[pl.ds(n, 1), :], reads[tok, :], inlast[tok, :])
        return (q, k, v, g, g_row, seg), rest


def _padded(x: kernel_io.Inputs) -> kernel_io.Inputs:
    K, V = (max(MIN_CHUNK, _pow2(a.shape[-1])) for a in (x.q, x.v))
    g = x.g if x.g is None or x.g.shape[-1] == 1 else _pad_last(x.g, K)
    return x._replace(q=_pad_last(x.q, K), k=_pad_last(x.k, K), v=_pad_last(x.v, V), g=g)


def _pad_state(S: jax.Array, K: int, V: int) -> jax.Array:
    return jnp.pad(S, ((0, 0), (0, K - S.shape[1]), (0, V - S.shape[2])))


def forward(x: kernel_io.Inputs, S0, scale: float, C: int, interpret: bool):
    K0, V0 = x.q.shape[-1], x.v.shape[-1]
    lay = _Layout(_padded(x), C)
    arrays, in_specs = lay.inputs()
    K, V, N = lay.K, lay.V, lay.N

    def kernel(*refs):
        *refs, S0_ref, o_ref, states_ref, final_ref = refs

        def body(n, S):
            chunk, _ = lay.load(refs, n)
            states_ref[pl.ds(n, 1), :, :] = S[None]
            o, S_next = kernel_chunk.forward(*chunk[:5], S, chunk[5], subchunk=C)
            o_ref[pl.ds(n * C, C), :] = scale * o
            return S_next

        final_ref[...] = lax.fori_loop(0, N, body, S0_ref[...].astype(_F32))

    o, states, final = pl.pallas_call(
        kernel,
        grid=(lay.BH,),
        in_specs=[*in_specs, lay.per_head(K, V)],
        out_specs=[lay.per_head(lay.Tp, V), lay.per_head(N, K, V), lay.per_head(K, V)],
        out_shape=[
            jax.ShapeDtypeStruct((lay.BH, lay.Tp, V), _F32),
            jax.ShapeDtypeStruct((lay.BH, N, K, V), _F32),
            jax.ShapeDtypeStruct((lay.BH, K, V), _F32),
        ],
        **_params(interpret),
    )(*arrays, _pad_state(S0, K, V))
    return o[..., :V0], states, final[:, :K0, :V0]


def backward(x: kernel_io.Inputs, states, do, dS_final, scale: float, C: int, interpret: bool):
    K0, V0 = x.q.shape[-1], x.v.shape[-1]
    lay = _Layout(_padded(x), C)
    arrays, in_specs = lay.inputs()
    K, V, N, Tp = lay.K, lay.V, lay.N, lay.Tp
    has_g = x.g is not None
    X = lay.x.g.shape[-1] if has_g else 0

    n_in = len(arrays) + 3

    def kernel(*refs):
        dq_ref, dk_ref, dv_ref, *dg_ref, dS0_ref = refs[n_in:]
        *refs, do_ref, states_ref, dSf_ref = refs[:n_in]
        dg_ref = dg_ref[0] if has_g else None

        def body(i, lam):
            n = N - 1 - i
            (q, k, v, g, g_row, seg), _ = lay.load(refs, n)
            do_n = scale * do_ref[pl.ds(n * C, C), :].astype(_F32)
            S = states_ref[pl.ds(n, 1), :, :][0]
            grads = kernel_chunk.backward(q, k, v, g, g_row, S, lam, do_n, seg, subchunk=C)
            dq, dk, dv, dg, lam_prev = grads
            tok = pl.ds(n * C, C)
            dq_ref[tok, :], dk_ref[tok, :], dv_ref[tok, :] = dq, dk, dv
            if dg_ref is not None:
                dg_ref[tok, :] = dg
            return lam_prev

        dS0_ref[...] = lax.fori_loop(0, N, body, dSf_ref[...])

    out_specs = [lay.per_head(Tp, K), lay.per_head(Tp, K), lay.per_head(Tp, V)]
    out_shape = [jax.ShapeDtypeStruct((lay.BH, Tp, D), _F32) for D in (K, K, V)]
    if has_g:
        out_specs.append(lay.per_head(Tp, X))
        out_shape.append(jax.ShapeDtypeStruct((lay.BH, Tp, X), _F32))
    out_specs.append(lay.per_head(K, V))
    out_shape.append(jax.ShapeDtypeStruct((lay.BH, K, V), _F32))
    outs = pl.pallas_call(
        kernel,
        grid=(lay.BH,),
        in_specs=[*in_specs, lay.per_head(Tp, V), lay.per_head(N, K, V), lay.per_head(K, V)],
        out_specs=out_specs,
        out_shape=out_shape,
        **_params(interpret),
    )(*arrays, _pad_last(do, V), states, _pad_state(dS_final, K, V))
    dq, dk, dv = outs[0][..., :K0], outs[1][..., :K0], outs[2][..., :V0]
    dg = outs[3][..., : (1 if X == 1 else K0)] if has_g else None
    return dq, dk, dv, dg, outs[-1][:, :K0, :V0]


# Dot dims below 16 give wrong results on GPUs; per-channel gates build a [C, C, K] decay
# tensor per chunk, which must stay small enough for registers.
MIN_CHUNK = 16
VECTOR_GATE_CHUNK = 16
_op = kernel_io.make_op(forward, backward, min_chunk=MIN_CHUNK)


def gla_pallas_gpu(q, k, v, g, *, chunk_size: int, **kwargs):
    """`kernel_io.make_op` contract; chunks of 16 to `chunk_size` tokens (16 for vector gates)."""
    if g is not None and g.ndim == 4:
        chunk_size = min(chunk_size, VECTOR_GATE_CHUNK)
    return _op(q, k, v, g, chunk_size=chunk_size, **kwargs)
