"""The custom-vjp kernel runner: the one `jax.custom_vjp` around a kernel family's forward and
backward. Kernel layout in (`layout.prepare`), forward kernel (which saves the N chunk states when
differentiated), backward kernel fed with those states, gradients back in the op's layout.

Every family supplies the same two callables (bind any per-engine chunk math with
`functools.partial` first):

    forward(x: layout.Inputs, S0 [BH, K, V] fp32, scale, C, interpret, states: bool)
        -> (o [BH, Tp, V] fp32, chunk states [BH, N, K, V] or None, final state [BH, K, V])
    backward(x, chunk states, do [BH, Tp, V], dS_final [BH, K, V] fp32, scale, C, interpret)
        -> layout.KernelGrads

Serves engine L (gate g) and engine Δ (g and beta, or its WY form through `w`)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from linmix.ops.common import chunks, layout

_F32 = jnp.float32


def make_op(run_forward, run_backward, min_chunk: int = 1):
    """The causal chunked op `(q, k, v, g, beta=None, *, scale, initial_state, segment_ids,
    chunk_size, interpret, w=None) -> (o fp32 [B, T, H, V], S_final fp32)`, the contract of the
    engines' XLA chunked forms. g: None, [B, T, H] or [B, T, H, K]; beta: None or [B, T, H]; w:
    None or [B, T, H, K], values u = v - w S (the delta rule after its WY transform). Chunks
    are at least `min_chunk` long (padded). Calls that are not differentiated run the forward
    with states=False: no chunk state is written (inference)."""

    def prepare(q, k, v, g, beta, w, seg, C):
        g_BTHX = None if g is None else chunks.gate_BTHX(g, q.shape)
        return layout.prepare(q, k, v, g_BTHX, seg, C, beta, w)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(8, 9, 10))
    def run(q, k, v, g, beta, w, S0, seg, scale, C, interpret):
        x = prepare(q, k, v, g, beta, w, seg, C)
        return finish(q, run_forward(x, fold_state(S0), scale, C, interpret, states=False))

    def fold_state(S0):
        return S0.astype(_F32).reshape(-1, *S0.shape[2:])

    def finish(q, forward_out):
        o, _, S_final = forward_out
        return layout.unfold(o, q.shape[0], q.shape[1]), S_final

    def run_fwd(q, k, v, g, beta, w, S0, seg, scale, C, interpret):
        x = prepare(q, k, v, g, beta, w, seg, C)
        forward_out = run_forward(x, fold_state(S0), scale, C, interpret, states=True)
        residuals = (q, k, v, g, beta, w, seg, forward_out[1], jnp.zeros((), S0.dtype))
        return finish(q, forward_out), residuals

    def run_bwd(scale, C, interpret, residuals, cotangents):
        q, k, v, g, beta, w, seg, states, S0_like = residuals
        do, dS_final = cotangents
        B, T = q.shape[:2]
        x = prepare(q, k, v, g, beta, w, seg, C)
        do = layout.fold(do, C)
        grads = run_backward(x, states, do, dS_final.astype(_F32), scale, C, interpret)
        dq, dk, dv, dg, dbeta, dS0, dw = grads
        unfold = layout.unfold
        dq, dk, dv = (unfold(d, B, T).astype(p.dtype) for d, p in ((dq, q), (dk, k), (dv, v)))
        dw = None if w is None else unfold(dw, B, T).astype(w.dtype)
        if g is not None:
            dg = unfold(dg, B, T).reshape(g.shape).astype(g.dtype)
        if beta is not None:
            dbeta = unfold(dbeta, B, T).reshape(beta.shape).astype(beta.dtype)
        dS0 = dS0.reshape(B, -1, *dS0.shape[1:]).astype(S0_like.dtype)
        return dq, dk, dv, dg, dbeta, dw, dS0, None

    run.defvjp(run_fwd, run_bwd)

    def op(
        q, k, v, g, beta=None, *, scale, initial_state, segment_ids, chunk_size, interpret, w=None
    ):
        B, T, H, K = q.shape
        if initial_state is None:
            initial_state = jnp.zeros((B, H, K, v.shape[-1]), _F32)
        C = max(min_chunk, chunks.chunk_length(T, chunk_size))
        o, S_final = run(q, k, v, g, beta, w, initial_state, segment_ids, scale, C, interpret)
        return o, S_final.reshape(B, H, K, -1)

    return op
