"""The chunked linear recurrence as Triton kernels (`kernels`) called through `jax_triton`,
forward and backward, joined by the custom-vjp kernel runner (`common.kernel_op.make_op`) as
`op(q, k, v, g, beta=None, *, scale, initial_state, segment_ids, chunk_size, interpret, w=None)`;
Triton's interpreter on a CPU backend. No or scalar gates here, per-channel gates in
`state_pass`; bf16, f16 or fp32 inputs (fp32 multiplies in IEEE fp32). The per-chunk math is
Triton source (`tl.dot` on register tiles), so it cannot share the array-level chunk math of the
Pallas kernels.

Chunks hold 16 to MAX_CHUNK tokens; key dims are zero-padded to a power of two >= 16 (one tile),
value dims to a power of two >= 16 split in blocks of at most MAX_BLOCK_V columns (one program
each). The per-token decay rows and chunk decays are computed in XLA (`layout.decay_rows`), the
gate gradient is assembled from the kernel's per-token sums (`layout.gate_grad`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.common import kernel_op, layout
from linmix.ops.common.layout import MIN_TRITON_DIM, Inputs, KernelGrads, LaunchConfig, triton_dim
from linmix.ops.kernels.jax_triton import launch as triton_launch

_F32 = jnp.float32
MAX_K = 256  # the [K, BLOCK_V] fp32 state lives in registers
MAX_CHUNK = 64
MAX_BLOCK_V = 64

# The launch configuration of every Triton kernel (ignored by the interpreter), chosen at compile
# time for sm_90 at K = V = 128, bf16 (`experiments/bench/triton_regs.py`; not timed): with 8
# warps (two warpgroups) every product still runs on wgmma and the register spills per thread
# fall from 4.0 to 0.5 KB in the forward and from 5.3 to 1.0 KB in the reverse backward kernel
# against 4 warps. Chunks of 32 would spill less but run the products on mma.sync (wgmma takes
# 64 rows).
JAX_TRITON_LAUNCH = LaunchConfig(num_warps=8, num_stages=2)


def kernels():
    from linmix.ops.kernels.jax_triton import kernels as triton_kernels  # imports triton

    return triton_kernels


def precision(dtype) -> str:
    """fp32 inputs multiply in IEEE fp32 (16-bit ones in their dtype either way)."""
    return "ieee" if dtype == _F32 else "tf32"


def _meta(x: Inputs, C: int, K: int, V: int) -> dict:
    Tp = x.q.shape[1]
    return dict(
        T=Tp, N=Tp // C, K=K, V=V, C=C, BV=min(V, MAX_BLOCK_V), HAS_W=x.w is not None,
        PRECISION=precision(x.q.dtype), num_warps=JAX_TRITON_LAUNCH.num_warps,
        num_stages=JAX_TRITON_LAUNCH.num_stages,
    )  # fmt: skip


def _prepare(x: Inputs, C: int):
    """q, k, v and w (a placeholder without the delta rule) padded to the tiles, the decay rows
    and chunk decays, and the kernels' constexprs."""
    K, V = triton_dim(x.q.shape[-1]), triton_dim(x.v.shape[-1])
    q, k = (layout.pad_to(a, 2, K) for a in (x.q, x.k))
    w = jnp.zeros((1,), x.q.dtype) if x.w is None else layout.pad_to(x.w, 2, K)
    rows, a = layout.decay_rows(x, C)
    return q, k, layout.pad_to(x.v, 2, V), w, rows, a, _meta(x, C, K, V)


def _pad_state(S: jax.Array, K: int, V: int) -> jax.Array:
    return layout.pad_to(layout.pad_to(S.astype(_F32), 1, K), 2, V)


def forward(x: Inputs, S0, scale: float, C: int, interpret: bool, states: bool = True):
    """The `kernel_op.make_op` forward: (o [BH, Tp, V] fp32, states [BH, N, K, V], final);
    with states=False (inference) no chunk state is written and states is None."""
    q, k, v, w, rows, a, meta = _prepare(x, C)
    BH, (Tp, N, K, V) = q.shape[0], (meta[n] for n in ("T", "N", "K", "V"))
    shapes = [
        jax.ShapeDtypeStruct((BH, Tp, V), _F32),
        jax.ShapeDtypeStruct((BH, N, K, V) if states else (1,), _F32),
        jax.ShapeDtypeStruct((BH, K, V), _F32),
    ]
    inputs = [q, k, v, rows, a, _pad_state(S0, K, V), w]
    grid = (BH, V // meta["BV"])
    o, chunk_states, final = launch(kernels().gla_fwd_kernel, grid, inputs, shapes, interpret,
                                     SCALE=float(scale), STORE_STATES=states, **meta)  # fmt: skip
    K0, V0 = x.q.shape[-1], x.v.shape[-1]
    return o[..., :V0], chunk_states if states else None, final[:, :K0, :V0]


def backward(x: Inputs, states, do, dS_final, scale: float, C: int, interpret: bool):
    """The `kernel_op.make_op` backward: `layout.KernelGrads` in the kernel layout."""
    q, k, v, w, rows, a, meta = _prepare(x, C)
    BH, (Tp, N, K, V) = q.shape[0], (meta[n] for n in ("T", "N", "K", "V"))
    NV = V // meta["BV"]
    do = layout.pad_to((scale * do).astype(q.dtype), 2, V)
    partial_K = jax.ShapeDtypeStruct((NV, BH, Tp, K), _F32)  # one per value block, summed below
    dq, fe_q = launch(
        kernels().gla_bwd_dq_kernel, (BH, N, NV), [q, k, v, do, rows, states, w],
        [partial_K, jax.ShapeDtypeStruct((NV, BH, Tp), _F32)], interpret, BH=BH, **meta,
    )  # fmt: skip
    shapes = [
        partial_K, jax.ShapeDtypeStruct((BH, Tp, V), _F32),
        jax.ShapeDtypeStruct((NV, BH, 2, Tp), _F32), jax.ShapeDtypeStruct((NV, BH, N), _F32),
        jax.ShapeDtypeStruct((BH, K, V), _F32),
        partial_K if x.w is not None else jax.ShapeDtypeStruct((1,), _F32),
    ]  # fmt: skip
    inputs = [q, k, v, do, rows, a, states, _pad_state(dS_final, K, V), w]
    dk, dv, sums, da, dS0, dw = launch(
        kernels().gla_bwd_kernel, (BH, NV), inputs, shapes, interpret, BH=BH, **meta
    )
    K0, V0 = x.q.shape[-1], x.v.shape[-1]
    dq, dk = (d.sum(axis=0)[..., :K0] for d in (dq, dk))
    sums = sums.sum(axis=0).at[:, 0].add(fe_q.sum(axis=0))  # fe = q . dq - k . dk_strict
    dg = None if x.g is None else layout.gate_grad(sums, da.sum(axis=0), a, C)
    dw = None if x.w is None else dw.sum(axis=0)[..., :K0]
    return KernelGrads(dq, dk, dv[..., :V0], dg, None, dS0[:, :K0, :V0], dw)


def launch(kernel, grid, inputs, shapes, interpret, **meta):
    return triton_launch.launch(kernel, grid, inputs, shapes, interpret, **meta)


op = kernel_op.make_op(forward, backward, min_chunk=MIN_TRITON_DIM)
