"""Chunked gated linear attention in plain XLA ops, with a memory-efficient custom backward.

The per-chunk pieces (`chunks.chunk_terms`) are computed for all chunks at once; only the small
recurrence S_[n+1] = a_n S_[n] + dS_n runs as a `lax.scan` over chunks, so just N = T / C states
are ever materialised, never one per token.

Backward (`jax.custom_vjp`): the forward saves the `jax.vjp` residuals of the per-chunk terms,
O(T * C) per head, and the chunk decays and increments. The backward recomputes the chunk
states, runs the adjoint recurrence backwards over chunks,

    lambda_N = dS_final,    lambda_n = (Q_n exp(b))^T dO_n + a_n lambda_{n+1},

and carries the per-chunk cotangents back through the saved `jax.vjp`, all chunks at once.
lambda_0 is the gradient of the initial state. No per-token state is ever stored.

All math is fp32 whatever the input dtype (bf16 inputs are upcast): mixed bf16 x bf16 -> fp32
dots are rejected by some XLA backends (the CPU runtime among them), and the decayed operands
need fp32 range anyway. The output is cast back to q.dtype by the caller.

Packed segments are handled with masks rather than -inf gates: intra-chunk pairs must share a
segment, a query reads the carried state only if it is still in the segment of the token before
the chunk, and the carried state survives a chunk only if the chunk never left that segment.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from linmix.ops.common.chunks import (
    chunk_inputs,
    chunk_length,
    from_chunks,
    gate_BTHX,
    segment_masks,
    to_chunks,
)
from linmix.ops.gla import chunks

_F32 = jnp.float32


def gla_chunked(
    q_BTHK: jax.Array,
    k_BTHK: jax.Array,
    v_BTHV: jax.Array,
    g: jax.Array | None,
    *,
    scale: float,
    initial_state: jax.Array | None,
    segment_ids: jax.Array | None,
    chunk_size: int,
) -> tuple[jax.Array, jax.Array]:
    """Causal chunked form. Returns (o [B, T, H, V] fp32, final state [B, H, K, V] fp32)."""
    B, T, H, K = q_BTHK.shape
    V = v_BTHV.shape[-1]
    g_BTHX = None if g is None else gate_BTHX(g, q_BTHK.shape)
    if initial_state is None:
        initial_state = jnp.zeros((B, H, K, V), _F32)
    C = chunk_length(T, chunk_size)
    return _chunked(q_BTHK, k_BTHK, v_BTHV, g_BTHX, initial_state, segment_ids, scale, C)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _chunked(q_BTHK, k_BTHK, v_BTHV, g_BTHX, S0_BHKV, seg_BT, scale, C):
    return _chunked_fwd(q_BTHK, k_BTHK, v_BTHV, g_BTHX, S0_BHKV, seg_BT, scale, C)[0]


def _chunked_fwd(q_BTHK, k_BTHK, v_BTHV, g_BTHX, S0_BHKV, seg_BT, scale, C):
    """Residuals: the per-chunk decays and increments (the chunk states are recomputed from them
    in the backward) and the intra-chunk residuals of `jax.vjp`, O(T * C) per head for every
    gate kind (a per-channel gate keeps its chunked inputs and recomputes its rescaling factors,
    see `vector.vector_parts`)."""
    x = chunk_inputs(q_BTHK, k_BTHK, v_BTHV, g_BTHX, C)
    masks = segment_masks(seg_BT, C)
    terms, terms_vjp = jax.vjp(lambda x: chunks.chunk_terms(x, masks), x)
    S_BHNKV, S_final_BHKV = _chunk_states(terms.a_BHNX, terms.dS_BHNKV, S0_BHKV.astype(_F32))
    o_inter_BHNCV = jnp.einsum("bhnck,bhnkv->bhncv", terms.q_decay_BHNCK, S_BHNKV)
    o_BHNCV = scale * (terms.o_intra_BHNCV + o_inter_BHNCV)
    out = from_chunks(o_BHNCV, q_BTHK.shape[1]), S_final_BHKV
    dtypes = tuple(jnp.zeros((), x.dtype) for x in (q_BTHK, k_BTHK, v_BTHV, S0_BHKV))
    gate_dtype = None if g_BTHX is None else jnp.zeros((), g_BTHX.dtype)
    residuals = (terms_vjp, terms.q_decay_BHNCK, terms.a_BHNX, terms.dS_BHNKV, S0_BHKV, dtypes)
    residuals = (*residuals, gate_dtype)
    return out, residuals


def _chunked_bwd(scale, C, residuals, cotangents):
    terms_vjp, q_decay_BHNCK, a_BHNX, dS_BHNKV, S0_BHKV, dtypes, gate_dtype = residuals
    do_BTHV, dS_final_BHKV = cotangents
    S_BHNKV, _ = _chunk_states(a_BHNX, dS_BHNKV, S0_BHKV.astype(_F32))

    do_BHNCV = scale * to_chunks(do_BTHV, C)
    # Gradient reaching S_[n] through chunk n's own outputs, then the adjoint recurrence.
    dS_own_BHNKV = jnp.einsum("bhnck,bhncv->bhnkv", q_decay_BHNCK, do_BHNCV)

    def adjoint(lam_BHKV, xs):
        a_BHX, dS_own_BHKV = xs
        return dS_own_BHKV + a_BHX[..., None] * lam_BHKV, lam_BHKV

    lam0_BHKV, lam_NBHKV = jax.lax.scan(
        adjoint,
        dS_final_BHKV.astype(_F32),
        (jnp.moveaxis(a_BHNX, 2, 0), jnp.moveaxis(dS_own_BHNKV, 2, 0)),
        reverse=True,
    )
    lam_next_BHNKV = jnp.moveaxis(lam_NBHKV, 0, 2)  # gradient of the state leaving each chunk

    da_BHNK = jnp.einsum("bhnkv,bhnkv->bhnk", lam_next_BHNKV, S_BHNKV)
    da_BHNX = da_BHNK if a_BHNX.shape[-1] > 1 else jnp.sum(da_BHNK, axis=-1, keepdims=True)
    d_terms = chunks.Terms(
        o_intra_BHNCV=do_BHNCV,
        q_decay_BHNCK=jnp.einsum("bhncv,bhnkv->bhnck", do_BHNCV, S_BHNKV),
        a_BHNX=da_BHNX,
        dS_BHNKV=lam_next_BHNKV,
    )
    (dx,) = terms_vjp(d_terms)
    T = do_BTHV.shape[1]
    dq, dk, dv = (
        from_chunks(d, T).astype(p.dtype) for d, p in zip(dx[:3], dtypes[:3], strict=True)
    )
    dg = None if gate_dtype is None else from_chunks(dx[3], T).astype(gate_dtype.dtype)
    return dq, dk, dv, dg, lam0_BHKV.astype(dtypes[3].dtype), None


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


def _chunk_states(
    a_BHNX: jax.Array, dS_BHNKV: jax.Array, S0_BHKV: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """States entering each chunk [B, H, N, K, V] and the final state, by a scan over chunks."""

    def step(S_BHKV, xs):
        a_BHX, dS_BHKV = xs
        return a_BHX[..., None] * S_BHKV + dS_BHKV, S_BHKV

    S_final_BHKV, S_NBHKV = jax.lax.scan(
        step, S0_BHKV, (jnp.moveaxis(a_BHNX, 2, 0), jnp.moveaxis(dS_BHNKV, 2, 0))
    )
    return jnp.moveaxis(S_NBHKV, 0, 2), S_final_BHKV


CausalForm = Callable[..., tuple[jax.Array, jax.Array]]


def bidirectional(
    causal_form: CausalForm,
    q_BTHK: jax.Array,
    k_BTHK: jax.Array,
    v_BTHV: jax.Array,
    g: jax.Array | None,
    *,
    scale: float,
    segment_ids: jax.Array | None,
    **kwargs,
) -> jax.Array:
    """Non-causal form as forward pass + reverse pass - diagonal. Returns o [B, T, H, V] fp32.

    The reverse pass sees key s from query t <= s with weight prod_{t<j<=s} a_j, i.e. it is the
    causal recurrence on the time-flipped sequence with the gates shifted by one position.
    `causal_form` is any causal implementation with the `gla_chunked` signature.
    """
    kwargs = dict(scale=scale, initial_state=None, **kwargs)
    o_fwd_BTHV, _ = causal_form(q_BTHK, k_BTHK, v_BTHV, g, segment_ids=segment_ids, **kwargs)

    def flip(x: jax.Array | None) -> jax.Array | None:
        return None if x is None else jnp.flip(x, axis=1)

    g_shift = None
    if g is not None:
        # Gate of position t+1 drives the step from t+1 to t; nothing follows the last token.
        g_shift = jnp.concatenate([g[:, 1:], jnp.zeros_like(g[:, :1])], axis=1)
    # Flipped segment ids are non-increasing; the forms only compare ids for equality.
    o_rev_BTHV, _ = causal_form(
        flip(q_BTHK),
        flip(k_BTHK),
        flip(v_BTHV),
        flip(g_shift),
        segment_ids=flip(segment_ids),
        **kwargs,
    )
    # Both passes count the s = t term (weight 1): remove one copy.
    qk_BTH = jnp.sum(q_BTHK.astype(_F32) * k_BTHK.astype(_F32), axis=-1)
    diag_BTHV = scale * qk_BTH[..., None] * v_BTHV.astype(_F32)
    return o_fwd_BTHV + flip(o_rev_BTHV) - diag_BTHV
