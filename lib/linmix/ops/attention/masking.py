"""Boolean attention mask shared by the attention implementations."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def attention_mask(
    length: int, *, causal: bool, segment_ids: jax.Array | None, window: int | None = None
) -> jax.Array:
    """[B or 1, T, T] bool, True where query t may attend to key s.

    `window` (causal only) keeps the last `window` keys: t - window < s <= t. The diagonal is
    always True, so no softmax row is ever fully masked.
    """
    if causal:
        mask_1TS = jnp.tril(jnp.ones((length, length), bool))[None]
        if window is not None:
            mask_1TS = mask_1TS & ~jnp.tril(jnp.ones((length, length), bool), k=-window)[None]
    else:
        mask_1TS = jnp.ones((1, length, length), bool)
    if segment_ids is None:
        return mask_1TS
    same_BTS = segment_ids[:, :, None] == segment_ids[:, None, :]
    return same_BTS & mask_1TS
