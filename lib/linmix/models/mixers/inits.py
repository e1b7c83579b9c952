"""Initialisers of the SSM-style gates of Mamba, Mamba2 and Gated DeltaNet
(docs/mixers.md#ssm-style-gates).

The step size Δ = softplus(· + dt_bias) starts log-uniform in [dt_min, dt_max], so heads or
channels begin with memory lengths spread over two decades; A = -exp(A_log) sets the decay rate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def inverse_softplus(y: jax.Array) -> jax.Array:
    """x with softplus(x) = y, for y > 0 (stable for small y: log(expm1(y)))."""
    return y + jnp.log(-jnp.expm1(-y))


def dt_bias(key: jax.Array, n: int, dt_min: float, dt_max: float, floor: float) -> jax.Array:
    """Bias giving softplus(dt_bias) ~ LogUniform[dt_min, dt_max], clipped below at `floor`."""
    u = jax.random.uniform(key, (n,))
    dt = jnp.exp(u * (jnp.log(dt_max) - jnp.log(dt_min)) + jnp.log(dt_min))
    return inverse_softplus(jnp.maximum(dt, floor))


def uniform_log_a(key: jax.Array, n: int, low: float, high: float) -> jax.Array:
    """A_log = log(A) with A ~ U[low, high] per head (Mamba2, Gated DeltaNet)."""
    return jnp.log(jax.random.uniform(key, (n,), minval=low, maxval=high))
