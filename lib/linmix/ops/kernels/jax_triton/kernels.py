"""Triton kernels of chunked gated linear attention (no or scalar gates), forward and backward;
launched by `op` through `jax_triton` on a GPU and Triton's interpreter on a CPU.

One program per (batch * head, block of BV value columns) walks the chunks of C tokens with the
fp32 [K, BV] state (forward) or adjoint (backward) in registers. Per chunk, with the rows
b (within-chunk cumulative log-decay), qs = exp(b) (0 where a query no longer reads the carried
state), ks = exp(b_last - b) (0 for keys of a segment closed inside the chunk), the chunk-local
segment id, and the chunk decay a, all computed outside (`linmix.ops.common.layout.decay_rows`):

    D       = exp(b_r - b_s) [s <= r, same segment]         (query r, key s)
    o       = scale * ((q k^T) * D) u + scale * (q * qs) S
    S_next  = a S + (k * ks)^T u,          u = v (gla) or v - w S (the delta rule after WY)

and the backward of `pallas_mosaic_gpu.backward` in two kernels: the query gradient, which
needs only the state entering each chunk, in parallel over chunks (`gla_bwd_dq_kernel`); the
rest walking the chunks in reverse with the adjoint (`gla_bwd_kernel`); dq, dk, dw partial per
value block, per-token sums for the gate gradient. Products take operands in the input dtype (fp32
accumulation; fp32 inputs multiply in IEEE fp32). Tiles: C, K, BV powers of two >= 16.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def gla_fwd_kernel(
    q_ptr, k_ptr, v_ptr, rows_ptr, a_ptr, s0_ptr, w_ptr,
    o_ptr, states_ptr, final_ptr,
    T: tl.constexpr, N: tl.constexpr, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr,
    BV: tl.constexpr, SCALE: tl.constexpr, HAS_W: tl.constexpr, PRECISION: tl.constexpr,
    STORE_STATES: tl.constexpr,
):  # fmt: skip
    """STORE_STATES: keep the state entering every chunk for the backward (not for inference)."""
    bh = tl.program_id(0).to(tl.int64)
    vb = tl.program_id(1)
    t = tl.arange(0, C)
    kk = tl.arange(0, K)
    vv = vb * BV + tl.arange(0, BV)
    r, s = t[:, None], t[None, :]
    dtype = q_ptr.dtype.element_ty
    state_at = kk[:, None] * V + vv[None, :]
    S = tl.load(s0_ptr + bh * K * V + state_at)
    for n in range(N):
        tok = bh * T + n * C + t
        q = tl.load(q_ptr + tok[:, None] * K + kk[None, :])
        k = tl.load(k_ptr + tok[:, None] * K + kk[None, :])
        u = tl.load(v_ptr + tok[:, None] * V + vv[None, :])
        row = rows_ptr + bh * 4 * T + n * C + t
        b, qs, ks, seg = tl.load(row), tl.load(row + T), tl.load(row + 2 * T), tl.load(row + 3 * T)
        if STORE_STATES:
            tl.store(states_ptr + (bh * N + n) * K * V + state_at, S)
        Sd = S.to(dtype)
        if HAS_W:
            w = tl.load(w_ptr + tok[:, None] * K + kk[None, :])
            ws = tl.dot(w, Sd, input_precision=PRECISION)
            u = (u.to(tl.float32) - ws).to(dtype)
        same = (s <= r) & (seg[:, None] == seg[None, :])
        D = tl.where(same, tl.exp(tl.minimum(b[:, None] - b[None, :], 0.0)), 0.0)
        P = tl.dot(q, tl.trans(k), input_precision=PRECISION) * D
        qd = (q.to(tl.float32) * qs[:, None]).to(dtype)
        o = tl.dot(P.to(dtype), u, input_precision=PRECISION)
        o = tl.dot(qd, Sd, acc=o, input_precision=PRECISION)
        tl.store(o_ptr + tok[:, None] * V + vv[None, :], SCALE * o)
        kd = (k.to(tl.float32) * ks[:, None]).to(dtype)
        a = tl.load(a_ptr + bh * N + n)
        S = tl.dot(tl.trans(kd), u, acc=a * S, input_precision=PRECISION)
    tl.store(final_ptr + bh * K * V + state_at, S)


@triton.jit
def gla_bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, rows_ptr, states_ptr, w_ptr,
    dq_ptr, fe_ptr,
    BH: tl.constexpr, T: tl.constexpr, N: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, BV: tl.constexpr, HAS_W: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """The query gradient, one program per (batch * head, chunk, value block): it needs only the
    state entering the chunk, so the chunks run in parallel. dq = (do u^T * D_strict) k +
    (do * qs) S^T + (do . u) k; outputs dq [NV, BH, T, K] and fe_q = q . dq [NV, BH, T] (partial
    per value block). do arrives scaled and in the input dtype."""
    bh = tl.program_id(0).to(tl.int64)
    n = tl.program_id(1)
    vb = tl.program_id(2)
    part = vb * BH + bh
    t = tl.arange(0, C)
    kk = tl.arange(0, K)
    vv = vb * BV + tl.arange(0, BV)
    r, s = t[:, None], t[None, :]
    dtype = q_ptr.dtype.element_ty
    tok = bh * T + n * C + t
    at_K = tok[:, None] * K + kk[None, :]
    at_V = tok[:, None] * V + vv[None, :]
    row = rows_ptr + bh * 4 * T + n * C + t
    b, qs, seg = tl.load(row), tl.load(row + T), tl.load(row + 3 * T)
    u, do = tl.load(v_ptr + at_V), tl.load(do_ptr + at_V)
    Sd = tl.load(states_ptr + (bh * N + n) * K * V + kk[:, None] * V + vv[None, :]).to(dtype)
    if HAS_W:
        w = tl.load(w_ptr + at_K)
        u = (u.to(tl.float32) - tl.dot(w, Sd, input_precision=PRECISION)).to(dtype)
    dof = do.to(tl.float32)
    diag = tl.sum(dof * u.to(tl.float32), axis=1)
    strict = (s < r) & (seg[:, None] == seg[None, :])
    D = tl.where(strict, tl.exp(tl.minimum(b[:, None] - b[None, :], 0.0)), 0.0)
    Ws = tl.dot(do, tl.trans(u), input_precision=PRECISION) * D
    k = tl.load(k_ptr + at_K)
    dq = tl.dot(Ws.to(dtype), k, input_precision=PRECISION)
    dq = tl.dot((dof * qs[:, None]).to(dtype), tl.trans(Sd), acc=dq, input_precision=PRECISION)
    q = tl.load(q_ptr + at_K)
    tl.store(fe_ptr + part * T + n * C + t, tl.sum(q.to(tl.float32) * dq, axis=1))
    tl.store(dq_ptr + part * T * K + at_K - bh * T * K, dq + diag[:, None] * k.to(tl.float32))


@triton.jit
def gla_bwd_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, rows_ptr, a_ptr, states_ptr, lam_ptr, w_ptr,
    dk_ptr, dv_ptr, sums_ptr, da_ptr, ds0_ptr, dw_ptr,
    BH: tl.constexpr, T: tl.constexpr, N: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, BV: tl.constexpr, HAS_W: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """The rest of the backward, chunks in reverse carrying lam = dL/dS_next. do arrives scaled
    and in the input dtype. Outputs: dk, dw [NV, BH, T, K] (partial per value block),
    dv [BH, T, V], sums [NV, BH, 2, T] (fe_k = -k . dk_strict, fs = k . dk_state),
    da [NV, BH, N], dS0 [BH, K, V]."""
    bh = tl.program_id(0).to(tl.int64)
    vb = tl.program_id(1)
    part = vb * BH + bh  # this value block's slot in the partial outputs
    t = tl.arange(0, C)
    kk = tl.arange(0, K)
    vv = vb * BV + tl.arange(0, BV)
    r, s = t[:, None], t[None, :]
    dtype = q_ptr.dtype.element_ty
    state_at = kk[:, None] * V + vv[None, :]
    lam = tl.load(lam_ptr + bh * K * V + state_at)
    for i in range(N):
        n = N - 1 - i
        tok = bh * T + n * C + t
        at_K = tok[:, None] * K + kk[None, :]
        at_V = tok[:, None] * V + vv[None, :]
        row = rows_ptr + bh * 4 * T + n * C + t
        b, qs, ks, seg = tl.load(row), tl.load(row + T), tl.load(row + 2 * T), tl.load(row + 3 * T)
        u, do = tl.load(v_ptr + at_V), tl.load(do_ptr + at_V)
        S = tl.load(states_ptr + (bh * N + n) * K * V + state_at)
        tl.store(da_ptr + part * N + n, tl.sum(tl.sum(lam * S, axis=1), axis=0))
        if HAS_W:
            Sd = S.to(dtype)
            w = tl.load(w_ptr + at_K)
            u = (u.to(tl.float32) - tl.dot(w, Sd, input_precision=PRECISION)).to(dtype)
        q, k = tl.load(q_ptr + at_K), tl.load(k_ptr + at_K)
        qf, kf = q.to(tl.float32), k.to(tl.float32)
        diag = tl.sum(do.to(tl.float32) * u.to(tl.float32), axis=1)
        # DT[r, s] = D[s, r]: key r, query s >= r of the same segment
        DT = tl.where(
            (r <= s) & (seg[:, None] == seg[None, :]),
            tl.exp(tl.minimum(b[None, :] - b[:, None], 0.0)),
            0.0,
        )
        WT = tl.dot(u, tl.trans(do), input_precision=PRECISION) * tl.where(r < s, DT, 0.0)
        dk_strict = tl.dot(WT.to(dtype), q, input_precision=PRECISION)
        lamd = lam.to(dtype)
        dk_state = tl.dot(u, tl.trans(lamd), input_precision=PRECISION) * ks[:, None]
        sums = sums_ptr + part * 2 * T + n * C + t
        tl.store(sums, -tl.sum(kf * dk_strict, axis=1))
        tl.store(sums + T, tl.sum(kf * dk_state, axis=1))
        dk = dk_state + dk_strict + diag[:, None] * qf
        tl.store(dk_ptr + part * T * K + at_K - bh * T * K, dk)
        PT = tl.dot(k, tl.trans(q), input_precision=PRECISION) * DT
        kd = (kf * ks[:, None]).to(dtype)
        dv = tl.dot(PT.to(dtype), do, input_precision=PRECISION)
        dv = tl.dot(kd, lamd, acc=dv, input_precision=PRECISION)
        tl.store(dv_ptr + at_V, dv)
        qd = (qf * qs[:, None]).to(dtype)
        a = tl.load(a_ptr + bh * N + n)
        lam_prev = tl.dot(tl.trans(qd), do, acc=a * lam, input_precision=PRECISION)
        if HAS_W:  # u = v - w S: dw = -du S^T, and -w^T du joins the state's gradient
            ndu = (-dv).to(dtype)
            dw = tl.dot(ndu, tl.trans(Sd), input_precision=PRECISION)
            tl.store(dw_ptr + part * T * K + at_K - bh * T * K, dw)
            lam_prev = tl.dot(tl.trans(w), ndu, acc=lam_prev, input_precision=PRECISION)
        lam = lam_prev
    tl.store(ds0_ptr + bh * K * V + state_at, lam)


@triton.jit
def state_pass_fwd_kernel(
    qd_ptr, kd_ptr, p_ptr, v_ptr, a_ptr, s0_ptr,
    o_ptr, states_ptr, final_ptr,
    T: tl.constexpr, N: tl.constexpr, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr,
    BV: tl.constexpr, SCALE: tl.constexpr, PRECISION: tl.constexpr, STORE_STATES: tl.constexpr,
):  # fmt: skip
    """Per-channel gates: the pair weights P [C, C], decayed queries and keys and the chunk decays
    a [K] come from XLA; o = scale * (P v + qd S), S_next = diag(a) S + kd^T v."""
    bh = tl.program_id(0).to(tl.int64)
    vb = tl.program_id(1)
    t = tl.arange(0, C)
    kk = tl.arange(0, K)
    vv = vb * BV + tl.arange(0, BV)
    state_at = kk[:, None] * V + vv[None, :]
    S = tl.load(s0_ptr + bh * K * V + state_at)
    for n in range(N):
        tok = bh * T + n * C + t
        qd = tl.load(qd_ptr + tok[:, None] * K + kk[None, :])
        kd = tl.load(kd_ptr + tok[:, None] * K + kk[None, :])
        P = tl.load(p_ptr + tok[:, None] * C + t[None, :])
        v = tl.load(v_ptr + tok[:, None] * V + vv[None, :])
        a = tl.load(a_ptr + (bh * N + n) * K + kk)
        if STORE_STATES:
            tl.store(states_ptr + (bh * N + n) * K * V + state_at, S)
        o = tl.dot(P, v, input_precision=PRECISION)
        o = tl.dot(qd, S.to(qd.dtype), acc=o, input_precision=PRECISION)
        tl.store(o_ptr + tok[:, None] * V + vv[None, :], SCALE * o)
        S = tl.dot(tl.trans(kd), v, acc=a[:, None] * S, input_precision=PRECISION)
    tl.store(final_ptr + bh * K * V + state_at, S)


@triton.jit
def state_pass_bwd_kernel(
    qd_ptr, kd_ptr, p_ptr, v_ptr, do_ptr, a_ptr, states_ptr, lam_ptr,
    dqd_ptr, dkd_ptr, dp_ptr, dv_ptr, da_ptr, ds0_ptr,
    BH: tl.constexpr, T: tl.constexpr, N: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Backward of the state pass, chunks in reverse with lam = dL/dS_next: dqd = do S^T,
    dkd = v lam^T, dP = do v^T, da = rowsum(lam * S) (partial per value block, [NV, BH, ...]);
    dv = P^T do + kd lam; lam_prev = diag(a) lam + qd^T do. do arrives scaled."""
    bh = tl.program_id(0).to(tl.int64)
    vb = tl.program_id(1)
    part = vb * BH + bh
    t = tl.arange(0, C)
    kk = tl.arange(0, K)
    vv = vb * BV + tl.arange(0, BV)
    state_at = kk[:, None] * V + vv[None, :]
    lam = tl.load(lam_ptr + bh * K * V + state_at)
    for i in range(N):
        n = N - 1 - i
        local = n * C + t
        tok = bh * T + local
        at_K = tok[:, None] * K + kk[None, :]
        at_V = tok[:, None] * V + vv[None, :]
        qd, kd = tl.load(qd_ptr + at_K), tl.load(kd_ptr + at_K)
        P = tl.load(p_ptr + tok[:, None] * C + t[None, :])
        v, do = tl.load(v_ptr + at_V), tl.load(do_ptr + at_V)
        S = tl.load(states_ptr + (bh * N + n) * K * V + state_at)
        Sd, lamd = S.to(qd.dtype), lam.to(qd.dtype)
        part_K = (part * T + local)[:, None] * K + kk[None, :]
        tl.store(dqd_ptr + part_K, tl.dot(do, tl.trans(Sd), input_precision=PRECISION))
        tl.store(dkd_ptr + part_K, tl.dot(v, tl.trans(lamd), input_precision=PRECISION))
        dP = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        tl.store(dp_ptr + (part * T + local)[:, None] * C + t[None, :], dP)
        dv = tl.dot(tl.trans(P), do, input_precision=PRECISION)
        tl.store(dv_ptr + at_V, tl.dot(kd, lamd, acc=dv, input_precision=PRECISION))
        tl.store(da_ptr + (part * N + n) * K + kk, tl.sum(lam * S, axis=1))
        a = tl.load(a_ptr + (bh * N + n) * K + kk)
        lam = tl.dot(tl.trans(qd), do, acc=a[:, None] * lam, input_precision=PRECISION)
    tl.store(ds0_ptr + bh * K * V + state_at, lam)
