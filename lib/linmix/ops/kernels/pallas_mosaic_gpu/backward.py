"""Backward of the Mosaic GPU kernel of `forward`: no or scalar gates.

One program per (batch * head, block of BLOCK_V value columns) walks the chunks in reverse with
the fp32 adjoint lam = dL/dS_next [K, BLOCK_V] in registers, from the states the forward stored.
With D the forward's pair decays (D_s: strict pairs), do the scaled output cotangent, and
diag_r = do_r . v_r:

    dq      = (do S^T) * qs + ((do v^T) * D_s) k + diag * k
    dk      = (v lam^T) * ks + ((v do^T) * D_s^T) q + diag * q
    dv      = ((k q^T) * D^T) do + (k * ks) lam
    lam_prev = a lam + (q * qs)^T do

dq and dk sum over the value blocks (one partial per block, added outside the kernel); dv is
complete per block. The gate gradient is assembled outside from per-token sums that each carry a
decay factor (as in `kernel_chunk`), so strong decays lose no accuracy:

    dg_j = sum_{r >= j} fe_r + sum_{s < j} fs_s + a * sum(lam * S),
    fe = rowsum(q * (dq_inter + dq_strict) - k * dk_strict),   fs = rowsum(k * dk_state).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from linmix.ops.common import layout
from linmix.ops.common.layout import Inputs, KernelGrads
from linmix.ops.kernels.pallas_mosaic_gpu import blocks as mgpu
from linmix.ops.kernels.pallas_mosaic_gpu.forward import BLOCK_V, values_minus_ws

_F32 = jnp.float32


def backward(x: Inputs, states, do, dS_final, scale: float, C: int, interpret: bool):
    """The `kernel_op.make_op` backward: `layout.KernelGrads` in the kernel layout."""
    K0, V0 = x.q.shape[-1], x.v.shape[-1]
    q, k, v = (layout.pad_to(a, 2, 64) for a in (x.q, x.k, x.v))
    BH, Tp, K = q.shape
    V, N = v.shape[-1], Tp // C
    NV, dtype, ops = V // BLOCK_V, q.dtype, mgpu.Ops(interpret)
    rows, a = layout.decay_rows(x, C)
    do = layout.pad_to((scale * do).astype(dtype), 2, 64)
    lam0 = layout.pad_to(layout.pad_to(dS_final.astype(_F32), 1, 64), 2, 64)
    has_w = x.w is not None  # the delta rule: values u = v - w S; dv is then du, plus dw
    inputs = [q, k, v, do, rows, a, states, lam0] + ([layout.pad_to(x.w, 2, 64)] if has_w else [])
    n_bar = 6 + has_w

    def body(*refs):
        q_ref, k_ref, v_ref, do_ref, rows_ref, a_ref, st_ref, lam_ref = refs[:8]
        w_ref = refs[8] if has_w else None
        dq_ref, dk_ref, dv_ref, sums_ref, da_ref, dS0_ref = refs[8 + has_w : 14 + has_w]
        dw_ref = refs[14 + has_w] if has_w else None
        bh, vb = lax.axis_index("bh"), lax.axis_index("vb")
        cols = pl.ds(vb * BLOCK_V, BLOCK_V)

        def scoped(
            q_s, k_s, v_s, do_s, S_s, lam_s, qd_s, rows_s, f32_s, outK_s, outV_s, sums_s, da_s,
            bar, *wu,
        ):  # fmt: skip
            def step(i, lam):
                n = N - 1 - i
                tok = pl.ds(n * C, C)
                plgpu.copy_gmem_to_smem(q_ref.at[bh, tok], q_s, bar.at[0])
                plgpu.copy_gmem_to_smem(k_ref.at[bh, tok], k_s, bar.at[1])
                plgpu.copy_gmem_to_smem(v_ref.at[bh, tok, cols], v_s, bar.at[2])
                plgpu.copy_gmem_to_smem(do_ref.at[bh, tok, cols], do_s, bar.at[3])
                plgpu.copy_gmem_to_smem(rows_ref.at[bh, :, tok], rows_s, bar.at[4])
                plgpu.copy_gmem_to_smem(st_ref.at[bh, n, :, cols], f32_s, bar.at[5])
                if has_w:
                    plgpu.copy_gmem_to_smem(w_ref.at[bh, tok], wu[0], bar.at[6])
                for j in range(n_bar):
                    plgpu.barrier_wait(bar.at[j])
                S = ops.tile(f32_s)
                S_s[...] = S.astype(dtype)
                u_s = values_minus_ws(ops, v_s, S_s, *wu[:2]) if has_w else v_s
                lam_s[...] = lam.astype(dtype)
                qs, ks = ops.column(rows_s.at[1], K), ops.column(rows_s.at[2], K)
                q_t, k_t = ops.tile(q_s).astype(_F32), ops.tile(k_s).astype(_F32)
                qd_s[...] = (q_t * qs).astype(dtype)
                plgpu.commit_smem()

                r, s = ops.iota((C, C), 0), ops.iota((C, C), 1)
                seg_c, seg_r = ops.column(rows_s.at[3], C), ops.row(rows_s.at[3], C)
                b_c, b_r = ops.column(rows_s.at[0], C), ops.row(rows_s.at[0], C)
                # D[r, s] (query r, key s) and its transpose DT[s, r] on the same index grid
                D = jnp.where(
                    (s <= r) & (seg_c == seg_r), jnp.exp(jnp.minimum(b_c - b_r, 0.0)), 0.0
                )
                DT = jnp.where(
                    (r <= s) & (seg_c == seg_r), jnp.exp(jnp.minimum(b_r - b_c, 0.0)), 0.0
                )
                Ds, DTs = jnp.where(s < r, D, 0.0), jnp.where(r < s, DT, 0.0)
                zCC, Op = ops.zeros((C, C)), mgpu.Operand
                zCK = ops.zeros((C, K))
                do_t = ops.tile(do_s).astype(_F32)
                diag = jnp.sum(do_t * ops.tile(u_s).astype(_F32), axis=1)
                diag = lax.broadcast_in_dim(diag, (C, K), [0])
                da = jnp.sum(lam * S, axis=1)
                # one gradient at a time, each stored before the next: few tiles live at once
                W = ops.matmul(zCC, (Op(do_s), Op(u_s).T)) * Ds
                do_q = (do_t * ops.column(rows_s.at[1], BLOCK_V)).astype(dtype)
                dq = ops.matmul(zCK, (W.astype(dtype), Op(k_s)), (do_q, Op(S_s).T))
                fe = jnp.sum(q_t * dq, axis=1)
                mgpu.store(dq + diag * k_t, outK_s, dq_ref.at[vb, bh, tok])
                WT = ops.matmul(zCC, (Op(u_s), Op(do_s).T)) * DTs
                dk_strict = ops.matmul(zCK, (WT.astype(dtype), Op(q_s)))
                dk_state = ops.matmul(zCK, (Op(u_s), Op(lam_s).T)) * ks
                fe = fe - jnp.sum(k_t * dk_strict, axis=1)
                fs = jnp.sum(k_t * dk_state, axis=1)
                mgpu.store(dk_state + dk_strict + diag * q_t, outK_s, dk_ref.at[vb, bh, tok])
                PT = ops.matmul(zCC, (Op(k_s), Op(q_s).T)) * DT
                dv = ops.matmul(
                    ops.zeros((C, BLOCK_V)),
                    (PT.astype(dtype), Op(do_s)),
                    ((k_t * ks).astype(dtype), Op(lam_s)),
                )
                mgpu.store(dv, outV_s, dv_ref.at[bh, tok, cols])
                lam_next = [(Op(qd_s).T, Op(do_s))]
                if has_w:  # u = v - w S: dw = -du S^T, and -w^T du joins the state's gradient
                    ndu_s = wu[2]
                    ndu_s[...] = (-dv).astype(dtype)
                    plgpu.commit_smem()
                    dw = ops.matmul(zCK, ((-dv).astype(dtype), Op(S_s).T))
                    mgpu.store(dw, outK_s, dw_ref.at[vb, bh, tok])
                    lam_next.append((Op(wu[0]).T, Op(ndu_s)))
                sums_s[0] = fe
                sums_s[1] = fs
                plgpu.commit_smem()
                plgpu.copy_smem_to_gmem(sums_s, sums_ref.at[vb, bh, :, tok])
                plgpu.wait_smem_to_gmem(0)
                mgpu.store(da, da_s, da_ref.at[vb, bh, n])
                return ops.matmul(a_ref[bh, n] * lam, *lam_next)

            mgpu.walk(
                ops, N, step, lam_ref.at[bh, :, cols], f32_s, bar.at[0], dS0_ref.at[bh, :, cols]
            )

        pl.run_scoped(
            scoped,
            mgpu.smem((C, K), dtype),
            mgpu.smem((C, K), dtype),
            mgpu.smem((C, BLOCK_V), dtype),
            mgpu.smem((C, BLOCK_V), dtype),
            mgpu.smem((K, BLOCK_V), dtype),
            mgpu.smem((K, BLOCK_V), dtype),
            mgpu.smem((C, K), dtype),
            plgpu.SMEM((4, C), _F32),
            mgpu.smem((K, BLOCK_V), _F32),
            mgpu.smem((C, K), _F32),
            mgpu.smem((C, BLOCK_V), _F32),
            plgpu.SMEM((2, C), _F32),
            plgpu.SMEM((K,), _F32),
            plgpu.Barrier(num_barriers=n_bar),
            *([mgpu.smem((C, K), dtype)] + [mgpu.smem((C, BLOCK_V), dtype)] * 2 if has_w else []),
        )

    partial_K = ((NV, BH, Tp, K), _F32)  # one per value block, summed below
    dq, dk, dv, sums, da, dS0, *dw = mgpu.launch(
        body, interpret, (BH, NV),
        [partial_K, partial_K, ((BH, Tp, V), _F32), ((NV, BH, 2, Tp), _F32),
         ((NV, BH, N, K), _F32), ((BH, K, V), _F32), *([partial_K] if has_w else [])],
    )(*inputs)  # fmt: skip
    dq, dk, *dw = (d.sum(axis=0)[..., :K0] for d in (dq, dk, *dw))
    dg = None if x.g is None else layout.gate_grad(sums.sum(axis=0), da.sum(axis=(0, 3)), a, C)
    return KernelGrads(dq, dk, dv[..., :V0], dg, None, dS0[:, :K0, :V0], *dw)
