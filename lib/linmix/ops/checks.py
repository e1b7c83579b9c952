"""Input checks shared by the public ops (static: shapes, dtypes and Python ints only)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def check_segment_ids(segment_ids: jax.Array | None, B: int, T: int) -> None:
    if segment_ids is None:
        return
    if segment_ids.shape != (B, T):
        raise ValueError(f"segment_ids must be [B, T] = {(B, T)}, got {segment_ids.shape}")
    if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise ValueError(f"segment_ids must have an integer dtype, got {segment_ids.dtype}")


def check_chunk_size(chunk_size) -> None:
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int | np.integer)
        or chunk_size <= 0
        or chunk_size & (chunk_size - 1)
    ):
        raise ValueError(f"chunk_size must be a positive power of two, got {chunk_size!r}")


def check_float_state(initial_state: jax.Array | None, shape: tuple, layout: str) -> None:
    """initial_state must be `shape` (named `layout`, e.g. '[B, H, K, V]') with a float dtype."""
    if initial_state is None:
        return
    if initial_state.shape != shape:
        raise ValueError(f"initial_state must be {layout} = {shape}, got {initial_state.shape}")
    if not jnp.issubdtype(initial_state.dtype, jnp.floating):
        raise ValueError(f"initial_state must have a float dtype, got {initial_state.dtype}")
