"""Selective scan as one parallel prefix scan over the whole sequence (docs/forms.md).

Each token is the elementwise pair (a_t, b_t) [B, T, D, M] of h_t = a_t * h_{t-1} + b_t, and pairs
compose as (a1, b1) then (a2, b2) -> (a2 a1, a2 b1 + b2). The depth is O(log T), but the decays,
the inputs and every per-token state are materialised: B*T*D*M floats several times over, and as
much again for gradients. Fine for small problems and as a second oracle; calls whose per-token
states would exceed MAX_STATE_BYTES are refused with an error naming the size (the chunked form
keeps one state per chunk instead).

A segment start sets a_t = 0, which drops everything before it; the initial state enters as
a_0 h_0 folded into the first token's b.

Backward (`linear_recurrence`, a `jax.custom_vjp`): the adjoint of h_t = a_t h_{t-1} + b_t is the
same recurrence run backwards in time with the decays shifted by one token,

    lam_t = dh_t + a_{t+1} lam_{t+1},    db_t = lam_t,    da_t = lam_t h_{t-1},

so it is one more reverse associative scan. That is cheaper to compile and to run than JAX's
transpose of the forward scan's interleaving slices. (Forward-mode AD is not defined for it.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.ssm import common

MAX_STATE_BYTES = 1 << 30


def check_fits(x_shape: tuple[int, ...], M: int) -> None:
    """Refuse a scan whose per-token [B, T, D, M] fp32 states alone exceed MAX_STATE_BYTES."""
    B, T, D = x_shape
    need = B * T * D * M * 4
    if need > MAX_STATE_BYTES:
        raise ValueError(
            f"implementation='associative_scan' stores one D x M state per token: B*T*D*M*4 = "
            f"{need / 2**30:.2f} GiB for x {tuple(x_shape)} and M={M}, over the "
            f"{MAX_STATE_BYTES / 2**30:.0f} GiB limit (linmix.ops.ssm.scan.MAX_STATE_BYTES); "
            f"use implementation='xla_chunked', which stores one state per chunk"
        )


def combine(
    earlier: tuple[jax.Array, jax.Array], later: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """(a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2."""
    a1, b1 = earlier
    a2, b2 = later
    return a2 * a1, a2 * b1 + b2


@jax.custom_vjp
def linear_recurrence(a_BTX: jax.Array, b_BTX: jax.Array) -> jax.Array:
    """h_t = a_t * h_{t-1} + b_t along axis 1 from h_{-1} = 0, elementwise over the other axes."""
    return jax.lax.associative_scan(combine, (a_BTX, b_BTX), axis=1)[1]


def _recurrence_fwd(a_BTX: jax.Array, b_BTX: jax.Array):
    h_BTX = linear_recurrence(a_BTX, b_BTX)
    return h_BTX, (a_BTX, h_BTX)


def _recurrence_bwd(residuals, dh_BTX: jax.Array) -> tuple[jax.Array, jax.Array]:
    a_BTX, h_BTX = residuals
    a_next_BTX = jnp.concatenate([a_BTX[:, 1:], jnp.zeros_like(a_BTX[:, :1])], axis=1)
    _, lam_BTX = jax.lax.associative_scan(combine, (a_next_BTX, dh_BTX), axis=1, reverse=True)
    h_prev_BTX = jnp.concatenate([jnp.zeros_like(h_BTX[:, :1]), h_BTX[:, :-1]], axis=1)
    return lam_BTX * h_prev_BTX, lam_BTX


linear_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def selective_scan_associative(
    x_BTD: jax.Array,
    delta_BTD: jax.Array,
    A_DM: jax.Array,
    B_BTGM: jax.Array,
    C_BTGM: jax.Array,
    *,
    h0_BDM: jax.Array,
    starts_BT: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Returns (y [B, T, D] fp32 without the D skip or z gate, final state [B, D, M] fp32)."""
    check_fits(x_BTD.shape, A_DM.shape[-1])
    a_BTDM = jnp.where(starts_BT[:, :, None, None], 0.0, common.decay(delta_BTD, A_DM))
    b_BTDM = common.write(delta_BTD, x_BTD, B_BTGM)
    b_BTDM = b_BTDM.at[:, 0].add(a_BTDM[:, 0] * h0_BDM.astype(common.F32))
    h_BTDM = linear_recurrence(a_BTDM, b_BTDM)
    return common.read(C_BTGM, h_BTDM), h_BTDM[:, -1]
