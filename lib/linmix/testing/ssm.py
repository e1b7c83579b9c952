"""Random problems for the selective scan, shared by the op tests and benchmarks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Bt, Dc, N = 2, 6, 4
# Step sizes delta = softplus(dt + dt_bias) around these values, with A[d, n] = -(n + 1) * (1 +
# d / Dc): a weak decay keeps ~all of the state over 200 tokens (delta |A| ~ 1e-2 per step), a
# strong one forgets it within a token or two (delta |A| up to ~50 per step).
DELTAS = {"weak": 3e-3, "medium": 0.5, "strong": 6.0}


def make_inputs(
    T: int,
    *,
    groups: int | None = 2,
    strength: str = "medium",
    skip: bool = True,
    gate: bool = True,
    seed: int = 0,
) -> dict[str, jax.Array | None]:
    """Random inputs; groups None means ungrouped [B, T, N] B and C."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> jax.Array:
        return jnp.asarray(rng.normal(size=shape), jnp.float32)

    bc_shape = (Bt, T, N) if groups is None else (Bt, T, groups, N)
    A = -np.arange(1, N + 1)[None, :] * (1 + np.arange(Dc)[:, None] / Dc)
    inv_softplus = np.log(np.expm1(DELTAS[strength]))
    return dict(
        x=normal(Bt, T, Dc),
        dt=0.5 * normal(Bt, T, Dc),
        A=jnp.asarray(A, jnp.float32),
        B=normal(*bc_shape),
        C=normal(*bc_shape),
        D=normal(Dc) if skip else None,
        z=normal(Bt, T, Dc) if gate else None,
        dt_bias=jnp.asarray(inv_softplus + 0.3 * rng.normal(size=Dc), jnp.float32),
        initial_state=normal(Bt, Dc, N),
    )


def random_problem(
    rng: np.random.Generator,
    Bt: int,
    T: int,
    Dc: int,
    N: int,
    groups: int | None,
    log_delta: float,
    n_segments: int = 1,
) -> tuple[dict, jax.Array | None]:
    """Inputs with delta = softplus(dt + dt_bias) ~ exp(log_delta) and A in [-4, -0.5]."""

    def normal(*shape: int) -> jax.Array:
        return jnp.asarray(rng.normal(size=shape), jnp.float32)

    bc_shape = (Bt, T, N) if groups is None else (Bt, T, groups, N)
    p = dict(
        x=normal(Bt, T, Dc),
        dt=0.5 * normal(Bt, T, Dc),
        A=jnp.asarray(-rng.uniform(0.5, 4.0, size=(Dc, N)), jnp.float32),
        B=normal(*bc_shape),
        C=normal(*bc_shape),
        D=normal(Dc),
        z=normal(Bt, T, Dc),
        dt_bias=jnp.asarray(np.log(np.expm1(np.exp(log_delta))) + 0.3 * rng.normal(size=Dc)),
        initial_state=normal(Bt, Dc, N),
    )
    p["dt_bias"] = p["dt_bias"].astype(jnp.float32)
    seg = None
    if n_segments > 1:
        seg = jnp.asarray(np.sort(rng.integers(0, n_segments, size=(Bt, T)), axis=1), jnp.int32)
    return p, seg
