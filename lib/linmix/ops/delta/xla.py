"""Chunked (gated) delta rule in plain XLA ops, with a memory-efficient custom backward.

The per-chunk pieces (`chunks.chunk_terms`: the WY / UT transform, docs/forms.md) are computed
for all chunks at once. Each chunk is then an affine map of the state entering it,

    O_n = scale * (O_intra_n + Q_eff_n S_[n]),    S_[n+1] = M_n S_[n] + dS_n,

and only that small recurrence (a K x K times K x V product per chunk) runs as a `lax.scan` over
chunks; N = T / C states are materialised, never one per token.

Backward (`jax.custom_vjp`): the forward saves the per-chunk M_n, dS_n and Q_eff_n and the
intra-chunk residuals of `jax.vjp`, O(T * (C + K + V)) per head plus the K x K matrices. The
backward recomputes the chunk states, runs the adjoint recurrence backwards over chunks,

    lambda_N = dS_final,    lambda_n = Q_eff_n^T dO_n + M_n^T lambda_{n+1},

and pulls the gradients of the per-chunk terms (dO_intra = dO, dQ_eff = dO S^T,
dM = lambda_{n+1} S^T, d(dS) = lambda_{n+1}) back to the inputs with `jax.vjp`, all chunks at
once. lambda_0 is the gradient of the initial state.

All math is fp32 whatever the input dtype (bf16 inputs are upcast): mixed bf16 x bf16 -> fp32
dots are rejected by some XLA backends (the CPU runtime among them), and the triangular solve
needs fp32 anyway. The output is cast back to q.dtype by the caller.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from linmix.ops.common.chunks import chunk_length, from_chunks, segment_masks, to_chunks
from linmix.ops.delta import chunks

_F32 = jnp.float32


def delta_rule_chunked(
    q_BTHK: jax.Array,
    k_BTHK: jax.Array,
    v_BTHV: jax.Array,
    beta_BTH: jax.Array,
    g_BTH: jax.Array | None,
    *,
    scale: float,
    initial_state: jax.Array | None,
    segment_ids: jax.Array | None,
    chunk_size: int,
) -> tuple[jax.Array, jax.Array]:
    """Causal chunked form. Returns (o [B, T, H, V] fp32, final state [B, H, K, V] fp32)."""
    B, T, H, K = q_BTHK.shape
    V = v_BTHV.shape[-1]
    if initial_state is None:
        initial_state = jnp.zeros((B, H, K, V), _F32)
    C = chunk_length(T, chunk_size)
    return _chunked(q_BTHK, k_BTHK, v_BTHV, beta_BTH, g_BTH, initial_state, segment_ids, scale, C)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def _chunked(q_BTHK, k_BTHK, v_BTHV, beta_BTH, g_BTH, S0_BHKV, seg_BT, scale, C):
    return _chunked_fwd(q_BTHK, k_BTHK, v_BTHV, beta_BTH, g_BTH, S0_BHKV, seg_BT, scale, C)[0]


def _chunked_fwd(q_BTHK, k_BTHK, v_BTHV, beta_BTH, g_BTH, S0_BHKV, seg_BT, scale, C):
    x = chunks.chunk_inputs(q_BTHK, k_BTHK, v_BTHV, beta_BTH, g_BTH, C)
    masks = segment_masks(seg_BT, C)
    terms, terms_vjp = jax.vjp(lambda x: chunks.chunk_terms(x, masks), x)
    S_BHNKV, S_final_BHKV = _chunk_states(terms.M_BHNKK, terms.dS_BHNKV, S0_BHKV.astype(_F32))
    o_inter_BHNCV = jnp.einsum("bhnck,bhnkv->bhncv", terms.q_eff_BHNCK, S_BHNKV)
    o_BHNCV = scale * (terms.o_intra_BHNCV + o_inter_BHNCV)
    out = from_chunks(o_BHNCV, q_BTHK.shape[1]), S_final_BHKV
    # Zero-size stand-ins carry the input dtypes into the backward (arrays, not dtype objects,
    # so the residuals stay a pytree of arrays).
    inputs = (q_BTHK, k_BTHK, v_BTHV, beta_BTH, g_BTH, S0_BHKV)
    dtypes = tuple(None if p is None else jnp.zeros((), p.dtype) for p in inputs)
    residuals = (terms_vjp, terms.q_eff_BHNCK, terms.M_BHNKK, terms.dS_BHNKV, S0_BHKV, dtypes)
    return out, residuals


def _chunked_bwd(scale, C, residuals, cotangents):
    terms_vjp, q_eff_BHNCK, M_BHNKK, dS_BHNKV, S0_BHKV, dtypes = residuals
    do_BTHV, dS_final_BHKV = cotangents
    S_BHNKV, _ = _chunk_states(M_BHNKK, dS_BHNKV, S0_BHKV.astype(_F32))

    do_BHNCV = scale * to_chunks(do_BTHV, C)
    # Gradient reaching S_[n] through chunk n's own outputs, then the adjoint recurrence.
    dS_own_BHNKV = jnp.einsum("bhnck,bhncv->bhnkv", q_eff_BHNCK, do_BHNCV)

    def adjoint(lam_BHKV, xs):
        M_BHKK, dS_own_BHKV = xs
        lam_prev_BHKV = dS_own_BHKV + jnp.einsum("bhjk,bhjv->bhkv", M_BHKK, lam_BHKV)
        return lam_prev_BHKV, lam_BHKV

    lam0_BHKV, lam_NBHKV = jax.lax.scan(
        adjoint,
        dS_final_BHKV.astype(_F32),
        (jnp.moveaxis(M_BHNKK, 2, 0), jnp.moveaxis(dS_own_BHNKV, 2, 0)),
        reverse=True,
    )
    lam_next_BHNKV = jnp.moveaxis(lam_NBHKV, 0, 2)  # gradient of the state leaving each chunk

    d_terms = chunks.Terms(
        o_intra_BHNCV=do_BHNCV,
        q_eff_BHNCK=jnp.einsum("bhncv,bhnkv->bhnck", do_BHNCV, S_BHNKV),
        M_BHNKK=jnp.einsum("bhnkv,bhnjv->bhnkj", lam_next_BHNKV, S_BHNKV),
        dS_BHNKV=lam_next_BHNKV,
    )
    (dx,) = terms_vjp(d_terms)
    T = do_BTHV.shape[1]
    dq, dk, dv = (
        from_chunks(d, T).astype(p.dtype) for d, p in zip(dx[:3], dtypes[:3], strict=True)
    )
    dbeta = from_chunks(dx.beta_BHNC[..., None], T)[..., 0].astype(dtypes[3].dtype)
    dg = None
    if dtypes[4] is not None:
        dg = from_chunks(dx.g_BHNC[..., None], T)[..., 0].astype(dtypes[4].dtype)
    return dq, dk, dv, dbeta, dg, lam0_BHKV.astype(dtypes[5].dtype), None


_chunked.defvjp(_chunked_fwd, _chunked_bwd)


def _chunk_states(
    M_BHNKK: jax.Array, dS_BHNKV: jax.Array, S0_BHKV: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """States entering each chunk [B, H, N, K, V] and the final state, by a scan over chunks."""

    def step(S_BHKV, xs):
        M_BHKK, dS_BHKV = xs
        return jnp.einsum("bhkj,bhjv->bhkv", M_BHKK, S_BHKV) + dS_BHKV, S_BHKV

    S_final_BHKV, S_NBHKV = jax.lax.scan(
        step, S0_BHKV, (jnp.moveaxis(M_BHNKK, 2, 0), jnp.moveaxis(dS_BHNKV, 2, 0))
    )
    return jnp.moveaxis(S_NBHKV, 0, 2), S_final_BHKV
