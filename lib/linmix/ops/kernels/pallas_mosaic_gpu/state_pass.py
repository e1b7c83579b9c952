"""The state pass of per-channel-gated linear attention as Mosaic GPU kernels (forward and
backward), called by `linmix.ops.gla.state_pass.on_state_pass` after the intra-chunk parts.

Per-channel decays do not factor out of the key sum, so the pair weights P of a chunk need
secondary chunking; they, the decayed queries and keys and the chunk decays a [K] need no state
and are computed for all chunks at once in XLA by the engine. What is sequential runs here, one
program per (batch * head, block of BLOCK_V value columns), chunks of CHUNK tokens:

    o = scale * (qd S + P v),    S' = diag(a) S + kd^T v

and its backward, walking the chunks in reverse from the stored states with lam = dL/dS':
dqd = do S^T, dkd = v lam^T, dP = do v^T (these three summed over value blocks outside),
dv = P^T do + kd lam, da = rowsum(lam * S), lam_prev = diag(a) lam + qd^T do.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from linmix.ops.kernels.pallas_mosaic_gpu import blocks as mgpu

_F32 = jnp.float32


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9, 10))
def state_pass(qd, kd, P, v, a, S0, scale, dtype, interpret, C, BV):
    """The `on_state_pass` contract on the kernel layout. Not differentiated (inference): no
    chunk state is written."""
    return _forward(qd, kd, P, v, a, S0, scale, dtype, interpret, C, BV, states=False)[:2]


def _pass_fwd(qd, kd, P, v, a, S0, scale, dtype, interpret, C, BV):
    o, final, states, (qd, kd, P) = _forward(
        qd, kd, P, v, a, S0, scale, dtype, interpret, C, BV, states=True
    )
    return (o, final), (qd, kd, P, v, a, states, jnp.zeros((), S0.dtype))


def _forward(qd, kd, P, v, a, S0, scale, dtype, interpret, C, BV, states: bool):
    """(o, final state, chunk states or None, qd, kd and P in the input dtype)."""
    BH, Tp, K = qd.shape
    V, N, ops = v.shape[-1], Tp // C, mgpu.Ops(interpret)
    args = [x.astype(dtype) for x in (qd, kd, P)] + [v, a, S0]
    qd, kd, P = args[:3]  # kept in the input dtype for the backward

    def body(qd_ref, kd_ref, P_ref, v_ref, a_ref, S0_ref, o_ref, *refs):
        *states_ref, final_ref = refs
        bh, vb = lax.axis_index("bh"), lax.axis_index("vb")
        cols, Op = pl.ds(vb * BV, BV), mgpu.Operand

        def scoped(qd_s, kd_s, P_s, v_s, st_s, a_s, o_s, sf_s, bar):
            def step(n, S):
                tok = pl.ds(n * C, C)
                srcs = (qd_ref.at[bh, tok], kd_ref.at[bh, tok], P_ref.at[bh, tok],
                        v_ref.at[bh, tok, cols], a_ref.at[bh, n])  # fmt: skip
                for i, (src, dst) in enumerate(zip(srcs, (qd_s, kd_s, P_s, v_s, a_s), strict=True)):
                    plgpu.copy_gmem_to_smem(src, dst, bar.at[i])
                if states:
                    mgpu.store(S, sf_s, states_ref[0].at[bh, n, :, cols])
                st_s[...] = S.astype(dtype)
                plgpu.commit_smem()
                for i in range(5):
                    plgpu.barrier_wait(bar.at[i])
                o = ops.matmul(ops.zeros((C, BV)), (Op(P_s), Op(v_s)), (Op(qd_s), Op(st_s)))
                S_next = (ops.column(a_s, BV) * S, (Op(kd_s).T, Op(v_s)))
                return mgpu.output_then_state(ops, scale * o, o_s, o_ref.at[bh, tok, cols], *S_next)

            mgpu.walk(
                ops, N, step, S0_ref.at[bh, :, cols], sf_s, bar.at[0], final_ref.at[bh, :, cols]
            )

        pl.run_scoped(
            scoped,
            mgpu.smem((C, K), dtype), mgpu.smem((C, K), dtype), mgpu.smem((C, C), dtype),
            mgpu.smem((C, BV), dtype), mgpu.smem((K, BV), dtype), plgpu.SMEM((K,), _F32),
            mgpu.smem((C, BV), _F32), mgpu.smem((K, BV), _F32), plgpu.Barrier(num_barriers=5),
        )  # fmt: skip

    chunk_states = [((BH, N, K, V), _F32)] if states else []
    o, *chunk_states, final = mgpu.launch(
        body, interpret, (BH, V // BV),
        [((BH, Tp, V), _F32), *chunk_states, ((BH, K, V), _F32)],
    )(*args)  # fmt: skip
    return o, final, chunk_states[0] if states else None, (qd, kd, P)


def _pass_bwd(scale, dtype, interpret, C, BV, residuals, cotangents):
    qd, kd, P, v, a, states, _ = residuals
    do, dS_final = cotangents
    BH, Tp, K = qd.shape
    V, N, ops = v.shape[-1], Tp // C, mgpu.Ops(interpret)
    NV = V // BV
    args = [x.astype(dtype) for x in (qd, kd, P, v, scale * do)] + [a, states, dS_final]

    def body(qd_ref, kd_ref, P_ref, v_ref, do_ref, a_ref, st_ref, lam_ref, *outs):
        dqd_ref, dkd_ref, dP_ref, dv_ref, da_ref, dS0_ref = outs
        bh, vb = lax.axis_index("bh"), lax.axis_index("vb")
        cols, Op = pl.ds(vb * BV, BV), mgpu.Operand

        def scoped(qd_s, kd_s, P_s, v_s, do_s, a_s, f32_s, S_s, lam_s, oK_s, oC_s, oV_s, da_s,
                   bar):  # fmt: skip
            def step(i, lam):
                n = N - 1 - i
                tok = pl.ds(n * C, C)
                srcs = (qd_ref.at[bh, tok], kd_ref.at[bh, tok], P_ref.at[bh, tok],
                        v_ref.at[bh, tok, cols], do_ref.at[bh, tok, cols], a_ref.at[bh, n],
                        st_ref.at[bh, n, :, cols])  # fmt: skip
                dsts = (qd_s, kd_s, P_s, v_s, do_s, a_s, f32_s)
                for j, (src, dst) in enumerate(zip(srcs, dsts, strict=True)):
                    plgpu.copy_gmem_to_smem(src, dst, bar.at[j])
                for j in range(7):
                    plgpu.barrier_wait(bar.at[j])
                S = ops.tile(f32_s)
                S_s[...] = S.astype(dtype)
                lam_s[...] = lam.astype(dtype)
                plgpu.commit_smem()
                zK = ops.zeros((C, K))
                mgpu.store(ops.matmul(zK, (Op(do_s), Op(S_s).T)), oK_s, dqd_ref.at[vb, bh, tok])
                mgpu.store(ops.matmul(zK, (Op(v_s), Op(lam_s).T)), oK_s, dkd_ref.at[vb, bh, tok])
                dP = ops.matmul(ops.zeros((C, C)), (Op(do_s), Op(v_s).T))
                mgpu.store(dP, oC_s, dP_ref.at[vb, bh, tok])
                dv = ops.matmul(ops.zeros((C, BV)), (Op(P_s).T, Op(do_s)), (Op(kd_s), Op(lam_s)))
                mgpu.store(dv, oV_s, dv_ref.at[bh, tok, cols])
                mgpu.store(jnp.sum(lam * S, axis=1), da_s, da_ref.at[vb, bh, n])
                return ops.matmul(ops.column(a_s, BV) * lam, (Op(qd_s).T, Op(do_s)))

            mgpu.walk(
                ops, N, step, lam_ref.at[bh, :, cols], f32_s, bar.at[0], dS0_ref.at[bh, :, cols]
            )

        pl.run_scoped(
            scoped,
            mgpu.smem((C, K), dtype), mgpu.smem((C, K), dtype), mgpu.smem((C, C), dtype),
            mgpu.smem((C, BV), dtype), mgpu.smem((C, BV), dtype), plgpu.SMEM((K,), _F32),
            mgpu.smem((K, BV), _F32), mgpu.smem((K, BV), dtype), mgpu.smem((K, BV), dtype),
            mgpu.smem((C, K), _F32), mgpu.smem((C, C), _F32), mgpu.smem((C, BV), _F32),
            plgpu.SMEM((K,), _F32), plgpu.Barrier(num_barriers=7),
        )  # fmt: skip

    dqd, dkd, dP, dv, da, dS0 = mgpu.launch(
        body, interpret, (BH, NV),
        [((NV, BH, Tp, K), _F32), ((NV, BH, Tp, K), _F32), ((NV, BH, Tp, C), _F32),
         ((BH, Tp, V), _F32), ((NV, BH, N, K), _F32), ((BH, K, V), _F32)],
    )(*args)  # fmt: skip
    dqd, dkd, dP, da = (x.sum(axis=0) for x in (dqd, dkd, dP, da))
    return dqd, dkd, dP, dv.astype(v.dtype), da, dS0


state_pass.defvjp(_pass_fwd, _pass_bwd)
