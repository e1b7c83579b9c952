"""Input checks shared by the public ops: shapes, dtypes and Python ints always; values
(decays <= 0, sorted segment ids) when the call is eager (under jit values are tracers)."""

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


def _concrete(x) -> bool:
    """A value we can look at now (eager call, or a constant closed over by a trace), not a
    tracer inside jit / grad / vmap."""
    return x is not None and not isinstance(x, jax.core.Tracer)


def check_nonpositive(name: str, x: jax.Array | None, meaning: str = "log-decays") -> None:
    """Values <= 0 (checked on concrete values; under jit only the shapes can be checked).
    NumPy, not jnp: inside a trace jnp would stage the check out instead of running it."""
    if _concrete(x):
        worst = float(np.max(np.asarray(x, np.float32), initial=-np.inf))
        if worst > 0:
            raise ValueError(f"{name} must be {meaning} <= 0, got a maximum of {worst}")


def check_segment_order(segment_ids: jax.Array | None) -> None:
    """segment_ids non-decreasing along T (checked on concrete values)."""
    if _concrete(segment_ids):
        seg = np.asarray(segment_ids)
        if np.any(seg[:, 1:] < seg[:, :-1]):
            raise ValueError("segment_ids must be non-decreasing along T (packed documents)")
