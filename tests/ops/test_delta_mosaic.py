"""The delta rule on the Mosaic GPU kernels (`implementation='mosaic_gpu'`: the WY transform in
XLA, the state recurrence in engine L's kernels with u = U - W S) vs the per-token oracle on the
same 16-bit inputs, outputs and all gradients (through the transform as well): in Pallas' GPU
interpreter on CPU, natively with `pytest -m gpu`; and the CUDA lowering from this CPU host.
Compared at the Mosaic kernels' bound (16-bit wgmma operands, see test_gla_mosaic.py).
"""

from __future__ import annotations

import jax.numpy as jnp
import pytest
from test_delta import compare, make_inputs, segments_from_starts
from test_delta_kernels import _lower
from test_gla_mosaic import MOSAIC_TOL

from linmix.ops.delta import delta_rule
from linmix.ops.delta.mosaic_gpu import delta_rule_mosaic_gpu


def _bf16(inputs: dict) -> dict:
    return {n: (x.astype(jnp.bfloat16) if n in ("q", "k", "v") else x) for n, x in inputs.items()}


@pytest.mark.parametrize(("T", "gated"), [(1, True), (65, False), (200, True)])
def test_matches_reference(T: int, gated: bool) -> None:
    """Segment starts on and off chunk edges, states, in-op L2 norm of q and k."""
    starts = [[1, 16, 64, 100, 128], [50]] if T > 1 else [[], []]
    segment_ids = segments_from_starts(T, starts)
    inputs = _bf16(make_inputs(T, gated, seed=T))
    compare(inputs, segment_ids=segment_ids, tol=MOSAIC_TOL, implementation="mosaic_gpu")


@pytest.mark.parametrize(("strength", "betas"), [(0.01, "near_one"), (20.0, "above_one")])
def test_gate_strengths_and_betas(strength: float, betas: str) -> None:
    T = 70
    segment_ids = segments_from_starts(T, [[3, 16], [64]])
    inputs = _bf16(make_inputs(T, True, strength=strength, betas=betas, seed=3))
    compare(inputs, segment_ids=segment_ids, tol=MOSAIC_TOL, implementation="mosaic_gpu")


def test_refuses_fp32_values() -> None:
    x = make_inputs(8, False)
    with pytest.raises(ValueError, match="bf16 or f16 v"):
        delta_rule(x["q"], x["k"], x["v"], x["beta"], implementation="mosaic_gpu")


@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.parametrize("gated", [False, True])
def test_cuda_lowering(gated: bool, segmented: bool) -> None:
    """Forward and backward lower through Mosaic GPU for CUDA at K = V = 128, from CPU."""
    lowered = _lower(delta_rule_mosaic_gpu, "cuda", gated, segmented)
    assert lowered.as_text().count("custom_call @mosaic_gpu") == 2


@pytest.mark.gpu
@pytest.mark.parametrize("gated", [False, True])
def test_gpu_native_matches_reference(gated: bool) -> None:
    T = 200
    segment_ids = segments_from_starts(T, [[1, 16, 50, 128], [100]])
    inputs = _bf16(make_inputs(T, gated, seed=1))
    compare(inputs, segment_ids=segment_ids, tol=MOSAIC_TOL, implementation="mosaic_gpu")
