"""Oracle for the selective scan: the literal per-token recurrence, everything in fp32.

    h_t = exp(delta_t A) * h_{t-1} + (delta_t x_t) B_t,    y_t = C_t . h_t     (per channel d)

with h reset to zero at the first token of every packed segment. One `lax.scan` step per token:
slow, and only meant to check the fast forms. The D skip and the z gate are applied by the caller
(`api.selective_scan`), identically for every form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.ssm import common


def selective_scan_reference(
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

    def step(h_BDM: jax.Array, xs: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
        x_BD, delta_BD, B_BGM, C_BGM, start_B = xs
        h_BDM = jnp.where(start_B[:, None, None], 0.0, h_BDM)
        h_BDM = common.decay(delta_BD, A_DM) * h_BDM + common.write(delta_BD, x_BD, B_BGM)
        return h_BDM, common.read(C_BGM, h_BDM)

    # Scan over time: put T first.
    xs = tuple(jnp.moveaxis(v, 1, 0) for v in (x_BTD, delta_BTD, B_BTGM, C_BTGM, starts_BT))
    h_BDM, y_TBD = jax.lax.scan(step, h0_BDM.astype(common.F32), xs)
    return jnp.moveaxis(y_TBD, 0, 1), h_BDM
