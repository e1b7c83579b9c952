"""(I + A)^-1 for a batch of strictly lower triangular C x C matrices A.

The delta rule's UT transform (docs/forms.md) needs Tm = (I + A)^-1 for every chunk. It is
computed by forward substitution, one row per step of a `lax.fori_loop`, all matrices at once:

    Tm[0] = e_0,    Tm[r] = e_r - sum_{j < r} A[r, j] Tm[j]

A LAPACK triangular solve (`jax.scipy.linalg.solve_triangular`) does the same, but on XLA:CPU it
is a custom call into a threaded BLAS that is slow for many small matrices on a busy host, and
its gradient compiles slowly. Forward substitution is backward stable; a power series
(I + A)^-1 = sum_j (-A)^j, or a product of its doubling factors, would cancel catastrophically
(for equal keys and beta = 1 the entries of A^j are binomial coefficients of order C).

The backward pass is the closed form dA = -strict_lower(Tm^T dTm Tm^T) (from
d Tm = -Tm dA Tm), so nothing of the loop is differentiated or kept.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


@jax.custom_vjp
def unit_lower_inverse(A: jax.Array) -> jax.Array:
    """(I + A)^-1 for A [..., C, C] strictly lower triangular (the diagonal and upper part of A
    are ignored). Returns [..., C, C], unit lower triangular, in A's dtype."""
    C = A.shape[-1]
    Tm0 = jnp.broadcast_to(jnp.eye(C, dtype=A.dtype), A.shape)
    cols_C = jnp.arange(C)

    def row(r: jax.Array, Tm: jax.Array) -> jax.Array:
        # Rows >= r of Tm are still identity rows, so only the strictly lower part of row r of
        # A may enter; HIGHEST keeps the products fp32 on backends whose default is bf16.
        a_C = jax.lax.dynamic_index_in_dim(A, r, axis=-2, keepdims=False)
        a_C = jnp.where(jnp.broadcast_to(cols_C < r, a_C.shape), a_C, 0.0)
        e_C = jax.lax.dynamic_index_in_dim(Tm, r, axis=-2, keepdims=False)
        new_C = e_C - jnp.einsum("...j,...jc->...c", a_C, Tm, precision=_HIGHEST)
        return jax.lax.dynamic_update_index_in_dim(Tm, new_C, r, axis=-2)

    return jax.lax.fori_loop(1, C, row, Tm0)


def _inverse_fwd(A: jax.Array) -> tuple[jax.Array, jax.Array]:
    Tm = unit_lower_inverse(A)
    return Tm, Tm


def _inverse_bwd(Tm: jax.Array, dTm: jax.Array) -> tuple[jax.Array]:
    TmT = jnp.swapaxes(Tm, -1, -2)
    dA = -jnp.matmul(TmT, jnp.matmul(dTm, TmT, precision=_HIGHEST), precision=_HIGHEST)
    return (jnp.tril(dA, k=-1),)


unit_lower_inverse.defvjp(_inverse_fwd, _inverse_bwd)
