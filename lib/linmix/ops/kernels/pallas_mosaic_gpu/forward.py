"""The forward Mosaic GPU kernel (Pallas lowered to Mosaic GPU, the supported Pallas GPU path from
JAX 0.11) of the chunked linear recurrence; its backward is in `backward`, both joined by
`linmix.ops.common.kernel_op.make_op` in `op`.

Covers no gate and scalar gates with 16-bit inputs (wgmma takes bf16 / f16 operands, fp32
accumulation); per-channel gates run the state pass of `state_pass`. The per-chunk math is
written out here rather than shared with the Pallas TPU / Triton-lowered kernels
(`linmix.ops.gla.kernel_chunk`): Mosaic GPU products are wgmma calls on shared-memory operands
with explicit barriers, which the array-level chunk math cannot express. One program per
(batch * head, block of BLOCK_V value columns) walks its chunks of CHUNK tokens in order with the
fp32 [K, BLOCK_V] state in registers:

    P       = (q k^T) * D,      D[r, s] = exp(b_r - b_s) [s <= r, same segment]
    o       = scale * (P v + (q * qs) S)
    S_next  = a S + (k * ks)^T v

b is the within-chunk cumulative log-decay; qs = exp(b) (0 where a query no longer reads the
carried state), ks = exp(b_last - b) (0 for keys of a segment closed inside the chunk) and the
chunk decay a are computed outside the kernel, O(T) per head. The state enters the output
products in the input dtype, as in the fp32-accumulated 16-bit kernels of the PyTorch ecosystem.
The state entering every chunk is stored for the backward. Feature dims are zero-padded to
multiples of 64. On a CPU backend the kernel runs in Pallas' GPU interpreter (`blocks`).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from linmix.ops.common import layout
from linmix.ops.common.layout import Inputs
from linmix.ops.kernels.pallas_mosaic_gpu import blocks as mgpu

_F32 = jnp.float32
CHUNK = 64
BLOCK_V = 64
MAX_K = 128  # the delta rule's backward holds ~210 KiB of shared memory at K = 128 (H100: 227)


def forward(x: Inputs, S0, scale: float, C: int, interpret: bool, states: bool = True):
    """The `kernel_op.make_op` forward: (o [BH, Tp, V] fp32, states [BH, N, K, V], final);
    with states=False (inference) no chunk state is written and states is None."""
    if C != CHUNK:
        raise ValueError(f"the Mosaic GPU kernel runs chunks of {CHUNK} tokens, got {C}")
    K0, V0 = x.q.shape[-1], x.v.shape[-1]
    q, k, v = (layout.pad_to(a, 2, 64) for a in (x.q, x.k, x.v))
    BH, Tp, K = q.shape
    V, N = v.shape[-1], Tp // C
    rows, a = layout.decay_rows(x, C)
    S0 = layout.pad_to(layout.pad_to(S0.astype(_F32), 1, 64), 2, 64)
    ops, dtype = mgpu.Ops(interpret), q.dtype
    inputs = [q, k, v, rows, a, S0]
    if x.w is not None:  # the delta rule: values u = v - w S
        inputs.append(layout.pad_to(x.w, 2, 64))
    n_bar = 4 + (x.w is not None)

    def body(*refs):
        q_ref, k_ref, v_ref, rows_ref, a_ref, S0_ref = refs[:6]
        o_ref, *states_ref, final_ref = refs[-3:] if states else refs[-2:]
        bh, vb = lax.axis_index("bh"), lax.axis_index("vb")
        cols = pl.ds(vb * BLOCK_V, BLOCK_V)

        def scoped(q_s, k_s, v_s, kd_s, st_s, rows_s, o_s, sf_s, bar, *wu):
            def step(n, S):
                tok = pl.ds(n * C, C)
                plgpu.copy_gmem_to_smem(q_ref.at[bh, tok], q_s, bar.at[0])
                plgpu.copy_gmem_to_smem(k_ref.at[bh, tok], k_s, bar.at[1])
                plgpu.copy_gmem_to_smem(v_ref.at[bh, tok, cols], v_s, bar.at[2])
                plgpu.copy_gmem_to_smem(rows_ref.at[bh, :, tok], rows_s, bar.at[3])
                if wu:
                    plgpu.copy_gmem_to_smem(refs[6].at[bh, tok], wu[0], bar.at[4])
                if states:
                    mgpu.store(S, sf_s, states_ref[0].at[bh, n, :, cols])
                st_s[...] = S.astype(dtype)
                for i in range(n_bar):
                    plgpu.barrier_wait(bar.at[i])
                values = v_s if not wu else values_minus_ws(ops, v_s, st_s, *wu)

                r, s = ops.iota((C, C), 0), ops.iota((C, C), 1)
                same = ops.column(rows_s.at[3], C) == ops.row(rows_s.at[3], C)
                b_r, b_s = ops.column(rows_s.at[0], C), ops.row(rows_s.at[0], C)
                D = jnp.where((s <= r) & same, jnp.exp(jnp.minimum(b_r - b_s, 0.0)), 0.0)
                P = ops.matmul(ops.zeros((C, C)), (mgpu.Operand(q_s), mgpu.Operand(k_s).T)) * D
                qd = ops.tile(q_s).astype(_F32) * ops.column(rows_s.at[1], K)
                kd_s[...] = (ops.tile(k_s).astype(_F32) * ops.column(rows_s.at[2], K)).astype(dtype)
                plgpu.commit_smem()
                o = ops.matmul(
                    ops.zeros((C, BLOCK_V)),
                    (P.astype(dtype), mgpu.Operand(values)),
                    (qd.astype(dtype), mgpu.Operand(st_s)),
                )
                S_next = (a_ref[bh, n] * S, (mgpu.Operand(kd_s).T, mgpu.Operand(values)))
                return mgpu.output_then_state(ops, scale * o, o_s, o_ref.at[bh, tok, cols], *S_next)

            mgpu.walk(
                ops, N, step, S0_ref.at[bh, :, cols], sf_s, bar.at[0], final_ref.at[bh, :, cols]
            )

        pl.run_scoped(
            scoped,
            mgpu.smem((C, K), dtype),
            mgpu.smem((C, K), dtype),
            mgpu.smem((C, BLOCK_V), dtype),
            mgpu.smem((C, K), dtype),
            mgpu.smem((K, BLOCK_V), dtype),
            plgpu.SMEM((4, C), _F32),
            mgpu.smem((C, BLOCK_V), _F32),
            mgpu.smem((K, BLOCK_V), _F32),
            plgpu.Barrier(num_barriers=n_bar),
            *_w_scratch(x, C, K, dtype),
        )

    chunk_states = [((BH, N, K, V), _F32)] if states else []
    o, *chunk_states, final = mgpu.launch(
        body, interpret, (BH, V // BLOCK_V),
        [((BH, Tp, V), _F32), *chunk_states, ((BH, K, V), _F32)],
    )(*inputs)  # fmt: skip
    return o[..., :V0], chunk_states[0] if states else None, final[:, :K0, :V0]


def _w_scratch(x: Inputs, C: int, K: int, dtype) -> list:
    """Shared memory for w and the values u = v - w S (delta rule only)."""
    return [] if x.w is None else [mgpu.smem((C, K), dtype), mgpu.smem((C, BLOCK_V), dtype)]


def values_minus_ws(ops: mgpu.Ops, v_s, st_s, w_s, u_s):
    """u = v - w S into u_s (in the input dtype; S from st_s, already in that dtype)."""
    plgpu.commit_smem()
    ws = ops.matmul(ops.zeros((CHUNK, BLOCK_V)), (mgpu.Operand(w_s), mgpu.Operand(st_s)))
    u_s[...] = (ops.tile(v_s).astype(_F32) - ws).astype(u_s.dtype)
    plgpu.commit_smem()
    return u_s
