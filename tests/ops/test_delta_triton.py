"""The delta rule on the Triton kernels (`implementation='triton'`: the WY transform in XLA, the
state recurrence u = U - W S in engine L's Triton kernels, which also return dw) vs the
per-token oracle, outputs and all gradients (through the transform as well): in Triton's
interpreter on CPU, natively with `pytest -m gpu`. fp32 at the fp32 bound, bf16 at the 16-bit
kernels' bound (see test_gla_triton.py)."""

from __future__ import annotations

import jax.numpy as jnp
import pytest
from test_delta import FP32_TOL, compare, make_inputs, segments_from_starts
from test_gla_triton import TRITON_16_TOL


def _cast(inputs: dict, dtype) -> dict:
    return {n: (x.astype(dtype) if n in ("q", "k", "v") else x) for n, x in inputs.items()}


@pytest.mark.parametrize(
    ("T", "gated", "chunk_size"), [(1, True, 64), (65, False, 16), (200, True, 64)]
)
def test_matches_reference_fp32(T: int, gated: bool, chunk_size: int) -> None:
    """Segment starts on and off chunk edges, states, in-op L2 norm of q and k."""
    starts = [[1, 16, 64, 100, 128], [50]] if T > 1 else [[], []]
    segment_ids = segments_from_starts(T, starts)
    inputs = make_inputs(T, gated, seed=T)
    compare(inputs, segment_ids=segment_ids, chunk_size=chunk_size, implementation="triton")


@pytest.mark.parametrize(("strength", "betas"), [(0.01, "near_one"), (20.0, "above_one")])
def test_gate_strengths_and_betas(strength: float, betas: str) -> None:
    T = 70
    segment_ids = segments_from_starts(T, [[3, 16], [64]])
    inputs = make_inputs(T, True, strength=strength, betas=betas, seed=3)
    compare(inputs, segment_ids=segment_ids, chunk_size=32, implementation="triton")


def test_bf16() -> None:
    T = 100
    segment_ids = segments_from_starts(T, [[10, 64], []])
    inputs = _cast(make_inputs(T, True, seed=4), jnp.bfloat16)
    compare(
        inputs, segment_ids=segment_ids, chunk_size=64, tol=TRITON_16_TOL, implementation="triton"
    )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gpu_native_matches_reference(dtype) -> None:
    T = 200
    segment_ids = segments_from_starts(T, [[1, 16, 50, 128], [100]])
    inputs = _cast(make_inputs(T, True, seed=1), dtype)
    tol = FP32_TOL if dtype == jnp.float32 else TRITON_16_TOL
    compare(inputs, segment_ids=segment_ids, chunk_size=64, tol=tol, implementation="triton")
