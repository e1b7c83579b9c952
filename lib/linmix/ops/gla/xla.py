"""Chunked gated linear attention in plain XLA ops, with a memory-efficient custom backward.

The per-chunk pieces (`chunks.chunk_terms`) are computed for all chunks at once; only the small
recurrence S_[n+1] = a_n S_[n] + dS_n runs as a `lax.scan` over chunks, so just N = T / C states
are ever materialised, never one per token.

Backward (`jax.custom_vjp`): the forward saves only its inputs. The backward recomputes the chunk
terms and the chunk states, runs the adjoint recurrence backwards over chunks,

    lambda_N = dS_final,    lambda_n = (Q_n exp(b))^T dO_n + a_n lambda_{n+1},

and differentiates the per-chunk terms with `jax.vjp`, all chunks at once. lambda_0 is the
gradient of the initial state. Peak memory is that of one forward pass.

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
    g_BTHX = chunks.gate_BTHX(g, q_BTHK.shape)
    if initial_state is None:
        initial_state = jnp.zeros((B, H, K, V), _F32)
    if segment_ids is None:
        segment_ids = jnp.zeros((B, T), jnp.int32)
    C = chunks.chunk_length(T, chunk_size)
    return _chunked(q_BTHK, k_BTHK, v_BTHV, g_BTHX, initial_state, segment_ids, scale, C)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _chunked(q_BTHK, k_BTHK, v_BTHV, g_BTHX, S0_BHKV, seg_BT, scale, C):
    x = chunks.chunk_inputs(q_BTHK, k_BTHK, v_BTHV, g_BTHX, C)
    terms = chunks.chunk_terms(x, chunks.segment_masks(seg_BT, C))
    S_BNHKV, S_final_BHKV = _chunk_states(terms, S0_BHKV.astype(_F32))
    o_inter_BNCHV = jnp.einsum("bnchk,bnhkv->bnchv", terms.q_decay_BNCHK, S_BNHKV)
    o_BNCHV = scale * (terms.o_intra_BNCHV + o_inter_BNCHV)
    return chunks.from_chunks(o_BNCHV, q_BTHK.shape[1]), S_final_BHKV


def _chunked_fwd(q_BTHK, k_BTHK, v_BTHV, g_BTHX, S0_BHKV, seg_BT, scale, C):
    out = _chunked(q_BTHK, k_BTHK, v_BTHV, g_BTHX, S0_BHKV, seg_BT, scale, C)
    return out, (q_BTHK, k_BTHK, v_BTHV, g_BTHX, S0_BHKV, seg_BT)


def _chunked_bwd(scale, C, residuals, cotangents):
    q_BTHK, k_BTHK, v_BTHV, g_BTHX, S0_BHKV, seg_BT = residuals
    do_BTHV, dS_final_BHKV = cotangents
    x = chunks.chunk_inputs(q_BTHK, k_BTHK, v_BTHV, g_BTHX, C)
    masks = chunks.segment_masks(seg_BT, C)
    terms, terms_vjp = jax.vjp(lambda x: chunks.chunk_terms(x, masks), x)
    S_BNHKV, _ = _chunk_states(terms, S0_BHKV.astype(_F32))

    do_BNCHV = scale * chunks.to_chunks(do_BTHV.astype(_F32), C)
    # Gradient reaching S_[n] through chunk n's own outputs, then the adjoint recurrence.
    dS_own_BNHKV = jnp.einsum("bnchk,bnchv->bnhkv", terms.q_decay_BNCHK, do_BNCHV)

    def adjoint(lam_BHKV, xs):
        a_BHX, dS_own_BHKV = xs
        return dS_own_BHKV + a_BHX[..., None] * lam_BHKV, lam_BHKV

    lam0_BHKV, lam_NBHKV = jax.lax.scan(
        adjoint,
        dS_final_BHKV.astype(_F32),
        (jnp.moveaxis(terms.a_BNHX, 1, 0), jnp.moveaxis(dS_own_BNHKV, 1, 0)),
        reverse=True,
    )
    lam_next_BNHKV = jnp.moveaxis(lam_NBHKV, 0, 1)  # gradient of the state leaving each chunk

    da_BNHK = jnp.sum(lam_next_BNHKV * S_BNHKV, axis=-1)
    X = terms.a_BNHX.shape[-1]
    da_BNHX = da_BNHK if X > 1 else jnp.sum(da_BNHK, axis=-1, keepdims=True)
    d_terms = chunks.Terms(
        o_intra_BNCHV=do_BNCHV,
        q_decay_BNCHK=jnp.einsum("bnchv,bnhkv->bnchk", do_BNCHV, S_BNHKV),
        a_BNHX=da_BNHX,
        dS_BNHKV=lam_next_BNHKV,
    )
    (dx,) = terms_vjp(d_terms)
    T = q_BTHK.shape[1]
    grads = [
        chunks.from_chunks(d, T).astype(p.dtype)
        for d, p in zip(dx, (q_BTHK, k_BTHK, v_BTHV, g_BTHX), strict=True)
    ]
    return (*grads, lam0_BHKV.astype(S0_BHKV.dtype), None)


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


def _chunk_states(terms: chunks.Terms, S0_BHKV: jax.Array) -> tuple[jax.Array, jax.Array]:
    """States entering each chunk [B, N, H, K, V] and the final state, by a scan over chunks."""

    def step(S_BHKV, xs):
        a_BHX, dS_BHKV = xs
        return a_BHX[..., None] * S_BHKV + dS_BHKV, S_BHKV

    S_final_BHKV, S_NBHKV = jax.lax.scan(
        step, S0_BHKV, (jnp.moveaxis(terms.a_BNHX, 1, 0), jnp.moveaxis(terms.dS_BNHKV, 1, 0))
    )
    return jnp.moveaxis(S_NBHKV, 0, 1), S_final_BHKV


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
