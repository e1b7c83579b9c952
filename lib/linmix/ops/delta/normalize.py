"""L2 normalisation of queries and keys over the key dimension, as the delta-rule mixers use it.

The delta rule S <- (I - beta k^T k) S + beta k^T v only contracts (every eigenvalue of the
transition in [1 - beta, 1]) when ||k|| = 1, so DeltaNet and Gated DeltaNet normalise q and k per
head inside the op. The norm is taken in fp32 with a small epsilon under the square root, which
keeps it finite and differentiable at k = 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

L2_EPS = 1e-6


def l2_normalize(x: jax.Array, eps: float = L2_EPS) -> jax.Array:
    """x / sqrt(sum_k x_k^2 + eps) over the last axis, in fp32 (returns fp32)."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)
