"""2-D tile helpers for the per-chunk math that runs inside Pallas kernels (one chunk of C tokens
as [C, D] tiles): dots with fp32 accumulation, index grids, triangular 0/1 matrices and the
strict same-segment pair mask."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from linmix.ops.common.layout import Seg

_F32 = jnp.float32


def dot(a: jax.Array, b: jax.Array, *, ta: bool = False, tb: bool = False, exact: bool = False):
    """a @ b with a and/or b transposed, fp32 accumulation; `exact` asks for full fp32 passes
    (cumulative sums of gates)."""
    dims = (((0 if ta else 1,), (1 if tb else 0,)), ((), ()))
    precision = lax.Precision.HIGHEST if exact else None
    return lax.dot_general(a, b, dims, precision=precision, preferred_element_type=_F32)


def iota(C: int, D: int | None = None) -> tuple[jax.Array, jax.Array]:
    shape = (C, C if D is None else D)
    return lax.broadcasted_iota(jnp.int32, shape, 0), lax.broadcasted_iota(jnp.int32, shape, 1)


def tri(C: int, pattern: str) -> jax.Array:
    """0/1 [C, C]: 'incl' s <= r, 'strict' s < r, 'after' s > r (row r, column s)."""
    r, s = iota(C)
    return {"incl": s <= r, "strict": s < r, "after": s > r}[pattern].astype(_F32)


def strict_mask(C: int, seg: Seg | None) -> jax.Array:
    r, s = iota(C)
    mask = s < r
    return mask if seg is None else mask & (seg.col == seg.row)
