"""The jax_triton kernels of gated linear attention (`implementation='jax_triton'`) beyond the
contract suite (`test_contract.py`, Triton's interpreter on CPU): the inference forward, the
native check (`pytest -m gpu`), and the kernels compiled by Triton for sm_90 (PTX and cubin)
from this CPU host.

fp32 inputs multiply in IEEE fp32 and meet the fp32 bound. 16-bit inputs round the pair weights,
the carried state, its adjoint and the output cotangent to the input dtype before their products
(fp32 accumulation), as the 16-bit kernels of the PyTorch ecosystem do: compared at TRITON_16_TOL
against the oracle on the same rounded inputs.
"""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from linmix.ops.kernels.jax_triton import compile as triton_compile
from linmix.ops.kernels.jax_triton import op as gla_triton
from linmix.testing.gla import (
    FP32_TOL,
    B,
    H,
    check_inference_forward,
    compare,
    make_inputs,
    segments_from_starts,
)

TRITON_16_TOL = 1e-2


def _cast(inputs: dict, dtype) -> dict:
    return {n: (x.astype(dtype) if n in "qkv" else x) for n, x in inputs.items()}


@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_inference_writes_no_chunk_states(gate: str) -> None:
    """Not differentiated, the forward kernels skip the chunk states the backward needs: the
    oracle's outputs, the differentiated forward's bit for bit, and no [B*H, N, K, V] kernel
    output (N = 4 chunks of 16 here)."""
    states = f"f32[{B * H},4,16,16]"  # K = 8 and V = 12 padded to 16
    check_inference_forward(make_inputs(64, gate, seed=5), "jax_triton", states, chunk_size=16)


@pytest.mark.parametrize(
    ("dtype", "dims", "has_w"), [("bf16", (128, 128), False), ("fp32", (64, 32), True)]
)
def test_compiles_for_hopper(dtype: str, dims: tuple[int, int], has_w: bool) -> None:
    """The forward and backward kernels (and the per-channel gates' state pass) compile for sm_90
    with the default launch configuration at the benchmark's K = V = 128 (bf16) and with the
    delta rule's w input (fp32, IEEE products), within the 228 KiB of shared memory per block."""
    Kd, Vd = dims
    launch = gla_triton.JAX_TRITON_LAUNCH
    shape = dict(K=Kd, V=Vd, C=gla_triton.MAX_CHUNK, BV=min(Vd, gla_triton.MAX_BLOCK_V),
                 num_warps=launch.num_warps, num_stages=launch.num_stages)  # fmt: skip
    for name in triton_compile.KERNELS:
        kernel = triton_compile.compile_kernel(name, dtype, has_w=has_w, **shape)
        assert kernel.asm["cubin"] and ".target sm_90" in kernel.asm["ptx"]
        assert kernel.metadata.shared <= 228 * 1024


def test_default_launch_keeps_products_on_wgmma_and_spills_little() -> None:
    """At K = V = 128 bf16 on sm_90 (ptxas' report on the PTX): every product of the default
    configuration is a Hopper wgmma; the chunk-parallel dq kernel and the per-channel state pass
    spill nothing, the forward under 1 KB per thread, and the forward and the reverse backward
    kernel at most a quarter of what they spill with 4 warps."""
    launch = gla_triton.JAX_TRITON_LAUNCH
    shape = dict(K=128, V=128, C=gla_triton.MAX_CHUNK, BV=gla_triton.MAX_BLOCK_V)
    spills = {}
    for name in ("fwd", "bwd_dq", "bwd", "pass_fwd"):
        for warps in (4, launch.num_warps):
            kernel = triton_compile.compile_kernel(
                name, "bf16", num_warps=warps, num_stages=launch.num_stages, **shape
            )
            res = triton_compile.resources(kernel)
            assert res["wgmma"] > 0 and res["mma_sync"] == 0, (name, warps, res)
            spills[name, warps] = res["spill_stores"] + res["spill_loads"]
    assert spills["bwd_dq", launch.num_warps] == spills["pass_fwd", launch.num_warps] == 0
    assert spills["fwd", launch.num_warps] < 1024
    for name in ("fwd", "bwd"):
        assert 4 * spills[name, launch.num_warps] <= spills[name, 4], spills


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gpu_native_matches_reference(dtype) -> None:
    T = 200
    segment_ids = segments_from_starts(T, [[1, 16, 50, 128], [100]])
    inputs = _cast(make_inputs(T, "scalar", seed=1), dtype)
    tol = FP32_TOL if dtype == jnp.float32 else TRITON_16_TOL
    compare(inputs, segment_ids=segment_ids, chunk_size=64, tol=tol, implementation="jax_triton")
