"""Gated linear attention as a parallel prefix scan (`jax.lax.associative_scan`, docs/forms.md).

Each token is the pair (a_t, B_t) = (exp(g_t), k_t^T v_t) of S_t = a_t S_{t-1} + B_t, and pairs
compose as (a1, B1) then (a2, B2) -> (a2 a1, a2 B1 + B2). The scan has O(log T) depth but
materialises one K x V state per token, B*T*H*K*V floats (plus temporaries and, for gradients,
as much again): it is meant for small states and as a second oracle, not for training. Calls whose
per-token states would exceed MAX_STATE_BYTES are refused with an error naming the size.

A segment start sets a_t = 0, which drops everything before it; the initial state enters as
a_0 S_0 folded into the first token's B.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.common.chunks import gate_BTHX, segment_starts

_F32 = jnp.float32
MAX_STATE_BYTES = 1 << 30


def check_fits(q_shape: tuple[int, ...], V: int) -> None:
    B, T, H, K = q_shape
    need = B * T * H * K * V * 4
    if need > MAX_STATE_BYTES:
        raise ValueError(
            f"implementation='associative_scan' stores one K x V state per token: B*T*H*K*V*4 = "
            f"{need / 2**30:.2f} GiB for q {tuple(q_shape)} and V={V}, over the "
            f"{MAX_STATE_BYTES / 2**30:.0f} GiB limit (linmix.ops.gla.scan.MAX_STATE_BYTES); "
            f"use implementation='xla_chunked', which stores one state per chunk"
        )


def gla_associative_scan(
    q_BTHK: jax.Array,
    k_BTHK: jax.Array,
    v_BTHV: jax.Array,
    g: jax.Array | None,
    *,
    scale: float,
    initial_state: jax.Array | None,
    segment_ids: jax.Array | None,
) -> tuple[jax.Array, jax.Array]:
    """Causal form. Returns (o [B, T, H, V] fp32, final state [B, H, K, V] fp32)."""
    B, T, H, K = q_BTHK.shape
    check_fits(q_BTHK.shape, v_BTHV.shape[-1])
    a_BTHX = jnp.exp(gate_BTHX(g, q_BTHK.shape).astype(_F32))
    starts_BT = segment_starts(segment_ids, B, T)
    a_BTHX = jnp.where(starts_BT[:, :, None, None], 0.0, a_BTHX)
    kv_BTHKV = jnp.einsum("bthk,bthv->bthkv", k_BTHK.astype(_F32), v_BTHV.astype(_F32))
    if initial_state is not None:
        S0_BHKV = a_BTHX[:, 0, :, :, None] * initial_state.astype(_F32)
        kv_BTHKV = kv_BTHKV.at[:, 0].add(S0_BHKV)

    def combine(earlier, later):
        a1, S1 = earlier
        a2, S2 = later
        return a2 * a1, a2[..., None] * S1 + S2

    _, S_BTHKV = jax.lax.associative_scan(combine, (a_BTHX, kv_BTHKV), axis=1)
    o_BTHV = scale * jnp.einsum("bthk,bthkv->bthv", q_BTHK.astype(_F32), S_BTHKV)
    return o_BTHV, S_BTHKV[:, -1]
