"""The state pass of per-channel-gated linear attention as Triton kernels
(`kernels.state_pass_{fwd,bwd}_kernel`), called by `linmix.ops.gla.state_pass.on_state_pass`
after the intra-chunk parts, joined by a `jax.custom_vjp`:

    o = scale * (qd S + P v),    S' = diag(a) S + kd^T v

with the backward's dqd, dkd, dP and da summed over value blocks outside the kernel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from linmix.ops.kernels.jax_triton import op as triton_op

_F32 = jnp.float32


def _meta(qd, v, C: int, BV: int) -> dict:
    BH, Tp, K = qd.shape
    launch = triton_op.JAX_TRITON_LAUNCH
    return dict(
        T=Tp, N=Tp // C, K=K, V=v.shape[-1], C=C, BV=BV, PRECISION=triton_op.precision(qd.dtype),
        num_warps=launch.num_warps, num_stages=launch.num_stages,
    )  # fmt: skip


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9, 10))
def state_pass(qd, kd, P, v, a, S0, scale, dtype, interpret, C, BV):
    """The `on_state_pass` contract on the kernel layout. Not differentiated (inference): no
    chunk state is written."""
    return _forward(qd, kd, P, v, a, S0, scale, dtype, interpret, C, BV, states=False)[:2]


def _forward(qd, kd, P, v, a, S0, scale, dtype, interpret, C, BV, states: bool):
    """(o, final state, chunk states or None, the 16-bit inputs)."""
    qd, kd, P, v = (x.astype(dtype) for x in (qd, kd, P, v))
    BH, Tp, K = qd.shape
    meta = _meta(qd, v, C, BV)
    shapes = [
        jax.ShapeDtypeStruct((BH, Tp, meta["V"]), _F32),
        jax.ShapeDtypeStruct((BH, meta["N"], K, meta["V"]) if states else (1,), _F32),
        jax.ShapeDtypeStruct((BH, K, meta["V"]), _F32),
    ]
    grid = (BH, meta["V"] // BV)
    kernel = triton_op.kernels().state_pass_fwd_kernel
    o, chunk_states, final = triton_op.launch(
        kernel, grid, [qd, kd, P, v, a, S0], shapes, interpret, SCALE=float(scale),
        STORE_STATES=states, **meta,
    )  # fmt: skip
    return o, final, chunk_states if states else None, (qd, kd, P, v)


def _pass_fwd(qd, kd, P, v, a, S0, scale, dtype, interpret, C, BV):
    o, final, states, (qd, kd, P, v) = _forward(
        qd, kd, P, v, a, S0, scale, dtype, interpret, C, BV, states=True
    )
    return (o, final), (qd, kd, P, v, a, states, jnp.zeros((), S0.dtype))


def _pass_bwd(scale, dtype, interpret, C, BV, residuals, cotangents):
    qd, kd, P, v, a, states, _ = residuals
    do, dS_final = cotangents
    BH, Tp, K = qd.shape
    meta = _meta(qd, v, C, BV)
    NV, N, V = meta["V"] // BV, meta["N"], meta["V"]
    shapes = [
        jax.ShapeDtypeStruct((NV, BH, Tp, K), _F32), jax.ShapeDtypeStruct((NV, BH, Tp, K), _F32),
        jax.ShapeDtypeStruct((NV, BH, Tp, C), _F32), jax.ShapeDtypeStruct((BH, Tp, V), _F32),
        jax.ShapeDtypeStruct((NV, BH, N, K), _F32), jax.ShapeDtypeStruct((BH, K, V), _F32),
    ]  # fmt: skip
    inputs = [qd, kd, P, v, (scale * do).astype(dtype), a, states, dS_final.astype(_F32)]
    kernel = triton_op.kernels().state_pass_bwd_kernel
    dqd, dkd, dP, dv, da, dS0 = triton_op.launch(kernel, (BH, NV), inputs, shapes, interpret,
                                                  BH=BH, **meta)  # fmt: skip
    dqd, dkd, dP, da = (x.sum(axis=0) for x in (dqd, dkd, dP, da))
    return dqd, dkd, dP, dv.astype(v.dtype), da, dS0


state_pass.defvjp(_pass_fwd, _pass_bwd)
