"""The Mosaic GPU kernels of gated linear attention (`implementation='pallas_mosaic_gpu'`) beyond
the contract suite (`test_contract.py`): the inference forward, the CUDA lowering from this CPU
host, and the native check (`pytest -m gpu`).

The kernels round the pair weights, the carried state, its adjoint and the output cotangent to
the input dtype before their wgmma products (fp32 accumulation), as the 16-bit kernels of the
PyTorch ecosystem do, so they are compared at MOSAIC_TOL, not at the fp32 bound.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from linmix.ops.gla.pallas_mosaic_gpu import gla_pallas_mosaic_gpu
from linmix.testing.gla import (
    B,
    H,
    check_inference_forward,
    compare,
    make_inputs,
    segments_from_starts,
)

MOSAIC_TOL = 1e-2
GATES = [None, "scalar", "vector"]


def _bf16(inputs: dict, dtype=jnp.bfloat16) -> dict:
    return {n: (x.astype(dtype) if n in "qkv" else x) for n, x in inputs.items()}


@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_inference_writes_no_chunk_states(gate: str) -> None:
    """Not differentiated, the forward kernels skip the chunk states the backward needs: the
    oracle's outputs (on the same 16-bit inputs), the differentiated forward's bit for bit, no
    [B*H, N, K, V] kernel output, and the kernel lowers for CUDA."""
    inputs = _bf16(make_inputs(128, gate, seed=5))
    states = f"f32[{B * H},2,64,64]"  # 2 chunks of 64; K = 8 and V = 12 padded to 64
    check_inference_forward(inputs, "pallas_mosaic_gpu", states, tol=MOSAIC_TOL)
    args = [inputs[n] for n in "qkvg"]

    def native(q, k, v, g):
        return gla_pallas_mosaic_gpu(q, k, v, g, scale=0.1, initial_state=None, segment_ids=None,
                              chunk_size=64, interpret=False)  # fmt: skip

    text = jax.jit(native).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("custom_call @mosaic_gpu") == 1


@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("dims", [(64, 64), (128, 128), (96, 40)])
def test_cuda_lowering(dims: tuple[int, int], gate: str | None, segmented: bool) -> None:
    """Forward and backward kernels lower through Mosaic GPU for CUDA from this CPU host:
    register layouts, wgmma operand shapes, swizzles and TMA slices are checked here."""
    T, (Kd, Vd) = 256, dims
    q, v = jnp.zeros((1, T, 2, Kd), jnp.bfloat16), jnp.zeros((1, T, 2, Vd), jnp.bfloat16)
    g = None if gate is None else jnp.zeros((1, T, 2) + ((Kd,) if gate == "vector" else ()))
    segment_ids = jnp.zeros((1, T), jnp.int32) if segmented else None

    def loss(q, k, v, g):
        o, S = gla_pallas_mosaic_gpu(
            q, k, v, g, scale=0.1, initial_state=None, segment_ids=segment_ids,
            chunk_size=64, interpret=False,
        )  # fmt: skip
        return jnp.sum(o) + jnp.sum(S)

    grad = jax.grad(loss, argnums=(0, 1, 2) if g is None else (0, 1, 2, 3))
    text = jax.jit(grad).trace(q, q, v, g).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("custom_call @mosaic_gpu") == 2


@pytest.mark.gpu
@pytest.mark.parametrize("gate", GATES)
def test_gpu_native_matches_reference(gate: str | None) -> None:
    T = 200
    segment_ids = segments_from_starts(T, [[1, 16, 50, 128], [100]])
    inputs = _bf16(make_inputs(T, gate, seed=1))
    compare(inputs, segment_ids=segment_ids, tol=MOSAIC_TOL, implementation="pallas_mosaic_gpu")
