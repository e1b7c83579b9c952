"""Oracles for gated linear attention: literal per-token recurrences, everything in fp32.

These are deliberately the most direct transcription of the math (see `linmix.ops.notation`):

    S_t = diag(a_t) S_{t-1} + k_t^T v_t,    o_t = scale * q_t S_t,    a_t = exp(g_t),

with the state reset to zero at the first token of every packed segment. They are slow (one scan
step per token) and exist to check the fast implementations, not to be used for training.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.common.chunks import segment_starts

_HIGHEST = jax.lax.Precision.HIGHEST


def expand_gate(g: jax.Array | None, shape_BTHK: tuple[int, int, int, int]) -> jax.Array:
    """Log-decay as fp32 [B, T, H, K]: None means no decay, a scalar gate is shared over K."""
    if g is None:
        return jnp.zeros(shape_BTHK, jnp.float32)
    g = g.astype(jnp.float32)
    if g.ndim == 3:
        g = g[..., None]
    return jnp.broadcast_to(g, shape_BTHK)


def gla_reference(
    q_BTHK: jax.Array,
    k_BTHK: jax.Array,
    v_BTHV: jax.Array,
    g: jax.Array | None,
    *,
    scale: float,
    initial_state: jax.Array | None,
    segment_ids: jax.Array | None,
) -> tuple[jax.Array, jax.Array]:
    """Causal recurrence, one `lax.scan` step per token. Returns (o [B,T,H,V] fp32, S [B,H,K,V])."""
    B, T, H, K = q_BTHK.shape
    V = v_BTHV.shape[-1]
    g_BTHK = expand_gate(g, (B, T, H, K))
    starts_BT = segment_starts(segment_ids, B, T)
    if initial_state is None:
        S0_BHKV = jnp.zeros((B, H, K, V), jnp.float32)
    else:
        S0_BHKV = initial_state.astype(jnp.float32)

    def step(S_BHKV: jax.Array, xs: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        q_BHK, k_BHK, v_BHV, g_BHK, start_B = xs
        S_BHKV = jnp.where(start_B[:, None, None, None], 0.0, S_BHKV)
        kv_BHKV = jnp.einsum("bhk,bhv->bhkv", k_BHK, v_BHV, precision=_HIGHEST)
        S_BHKV = jnp.exp(g_BHK)[..., None] * S_BHKV + kv_BHKV
        o_BHV = jnp.einsum("bhk,bhkv->bhv", q_BHK, S_BHKV, precision=_HIGHEST)
        return S_BHKV, o_BHV

    # Scan over time: put T first.
    xs = tuple(
        jnp.moveaxis(x.astype(jnp.float32), 1, 0) for x in (q_BTHK, k_BTHK, v_BTHV, g_BTHK)
    ) + (jnp.moveaxis(starts_BT, 1, 0),)
    S_BHKV, o_TBHV = jax.lax.scan(step, S0_BHKV, xs)
    return scale * jnp.moveaxis(o_TBHV, 0, 1), S_BHKV


def gla_bidirectional_reference(
    q_BTHK: jax.Array,
    k_BTHK: jax.Array,
    v_BTHV: jax.Array,
    g: jax.Array | None,
    *,
    scale: float,
    segment_ids: jax.Array | None,
) -> jax.Array:
    """Non-causal form, direct O(T^2) sum over all same-segment pairs. Returns o [B,T,H,V] fp32.

    The weight of key s for query t is prod_{s<j<=t} a_j when s <= t and prod_{t<j<=s} a_j when
    s > t, i.e. exp(G_t - G_s) or exp(G_s - G_t) with G the inclusive cumulative log-decay.
    """
    B, T, H, K = q_BTHK.shape
    G_BHTK = jnp.cumsum(jnp.moveaxis(expand_gate(g, (B, T, H, K)), 1, 2), axis=2)
    diff_BHTSK = G_BHTK[:, :, :, None, :] - G_BHTK[:, :, None, :, :]
    t_T1 = jnp.arange(T)[:, None]
    s_1T = jnp.arange(T)[None, :]
    # The diagonal's exponent is a constant 0, not G_t - G_t: that difference would send two
    # large, exactly cancelling gradients into G_t whose rounding swamps small gate gradients.
    log_w_BHTSK = jnp.where(
        (s_1T < t_T1)[None, None, :, :, None],
        diff_BHTSK,
        jnp.where((s_1T > t_T1)[None, None, :, :, None], -diff_BHTSK, 0.0),
    )
    if segment_ids is None:
        same_BTS = jnp.ones((B, T, T), bool)
    else:
        same_BTS = segment_ids[:, :, None] == segment_ids[:, None, :]
    mask_BHTSK = jnp.broadcast_to(same_BTS[:, None, :, :, None], log_w_BHTSK.shape)
    # Mask the exponent too, so cross-segment pairs can neither overflow nor poison gradients.
    w_BHTSK = jnp.where(mask_BHTSK, jnp.exp(jnp.where(mask_BHTSK, log_w_BHTSK, 0.0)), 0.0)
    q_BTHK = q_BTHK.astype(jnp.float32)
    k_BTHK = k_BTHK.astype(jnp.float32)
    A_BHTS = jnp.einsum("bthk,bshk,bhtsk->bhts", q_BTHK, k_BTHK, w_BHTSK, precision=_HIGHEST)
    o_BTHV = jnp.einsum("bhts,bshv->bthv", A_BHTS, v_BTHV.astype(jnp.float32), precision=_HIGHEST)
    return scale * o_BTHV
