"""Softmax attention through `jax.nn.dot_product_attention(implementation='xla')`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from linmix.ops.attention.masking import attention_mask


def attention_xla(
    q_BTHD: jax.Array,
    k_BTHD: jax.Array,
    v_BTHV: jax.Array,
    *,
    scale: float,
    segment_ids: jax.Array | None,
    causal: bool,
    window: int | None = None,
) -> jax.Array:
    """Returns o [B, T, H, V] in the inputs' common dtype; GQA is handled by the JAX API."""
    T = q_BTHD.shape[1]
    D = q_BTHD.shape[-1]
    Dv = v_BTHV.shape[-1]
    # The JAX API wants one dtype and v shaped like k. Zero-padding the shorter feature dim is
    # exact: extra q/k zeros add nothing to the logits, extra v zeros are sliced off.
    dtype = jnp.result_type(q_BTHD, k_BTHD, v_BTHV)
    width = max(D, Dv)
    q_BTHW, k_BTHW, v_BTHW = (
        jnp.pad(x.astype(dtype), ((0, 0), (0, 0), (0, 0), (0, width - x.shape[-1])))
        for x in (q_BTHD, k_BTHD, v_BTHV)
    )
    mask_BTS = attention_mask(T, causal=causal, segment_ids=segment_ids, window=window)
    o_BTHW = jax.nn.dot_product_attention(
        q_BTHW,
        k_BTHW,
        v_BTHW,
        mask=mask_BTS[:, None],
        scale=scale,
        implementation="xla",
    )
    return o_BTHW[..., :Dv]
