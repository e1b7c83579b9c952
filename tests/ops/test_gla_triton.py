"""The Triton kernels of gated linear attention (`implementation='triton'`, forward and backward)
vs the per-token oracle, outputs and all gradients: in Triton's interpreter on CPU (the same
kernel source, run through `jax.pure_callback`), natively with `pytest -m gpu`; and the kernels
compiled by Triton for sm_90 (PTX and cubin) from this CPU host.

fp32 inputs multiply in IEEE fp32 and meet the fp32 bound. 16-bit inputs round the pair weights,
the carried state, its adjoint and the output cotangent to the input dtype before their products
(fp32 accumulation), as the 16-bit kernels of the PyTorch ecosystem do: compared at TRITON_16_TOL
against the oracle on the same rounded inputs.
"""

from __future__ import annotations

import jax.numpy as jnp
import pytest
from test_gla import (
    FP32_TOL,
    B,
    H,
    K,
    V,
    check_inference_forward,
    compare,
    make_inputs,
    segments_from_starts,
)

from linmix.ops.gla import gla, triton_compile
from linmix.ops.gla import triton as gla_triton

TRITON_16_TOL = 1e-2


def _cast(inputs: dict, dtype) -> dict:
    return {n: (x.astype(dtype) if n in "qkv" else x) for n, x in inputs.items()}


@pytest.mark.parametrize("gate", [None, "scalar", "vector"])
@pytest.mark.parametrize(("T", "chunk_size"), [(1, 64), (63, 16), (64, 32), (65, 16), (200, 64)])
def test_matches_reference_fp32(T: int, chunk_size: int, gate: str | None) -> None:
    """Segment starts on and off chunk edges, an initial and a final state, K != V (both padded
    to 16), chunks of 16 to 64 tokens."""
    starts = [[1, 16, 40, 64, 100, 128], [33]] if T > 1 else [[], []]
    segment_ids = segments_from_starts(T, starts)
    inputs = make_inputs(T, gate, seed=T)
    compare(inputs, segment_ids=segment_ids, chunk_size=chunk_size, implementation="triton")


@pytest.mark.parametrize(
    ("strength", "gate"), [(0.01, "scalar"), (20.0, "scalar"), (20.0, "vector")]
)
def test_gate_strengths_and_bidirectional(strength: float, gate: str) -> None:
    T = 70
    segment_ids = segments_from_starts(T, [[3, 16], [64]])
    inputs = make_inputs(T, gate, strength=strength, seed=3)
    compare(inputs, segment_ids=segment_ids, chunk_size=32, implementation="triton")
    compare(inputs, causal=False, chunk_size=32, tol=FP32_TOL, implementation="triton")


@pytest.mark.parametrize(("dtype", "gate"), [(jnp.bfloat16, "scalar"), (jnp.float16, "vector")])
def test_16_bit_inputs(dtype, gate: str) -> None:
    T = 100
    segment_ids = segments_from_starts(T, [[10, 64], []])
    inputs = _cast(make_inputs(T, gate, seed=4), dtype)
    compare(
        inputs, segment_ids=segment_ids, chunk_size=64, tol=TRITON_16_TOL, implementation="triton"
    )


def test_refuses_mixed_dtypes_and_wide_keys() -> None:
    inputs = make_inputs(8, "vector")
    q, k, v = (inputs[n] for n in "qkv")
    with pytest.raises(ValueError, match="one dtype"):
        gla(q, k, v.astype(jnp.bfloat16), implementation="triton")
    wide = jnp.zeros((1, 8, 1, 512), jnp.float32)
    with pytest.raises(ValueError, match="key dims up to 256"):
        gla(wide, wide, wide, implementation="triton")
    o, _ = gla(q, k, v, implementation="triton")
    assert o.shape == (B, 8, H, V) and K != V


@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_inference_writes_no_chunk_states(gate: str) -> None:
    """Not differentiated, the forward kernels skip the chunk states the backward needs: the
    oracle's outputs, the differentiated forward's bit for bit, and no [B*H, N, K, V] kernel
    output (N = 4 chunks of 16 here)."""
    states = f"f32[{B * H},4,16,16]"  # K = 8 and V = 12 padded to 16
    check_inference_forward(make_inputs(64, gate, seed=5), "triton", states, chunk_size=16)


@pytest.mark.parametrize(
    ("dtype", "dims", "has_w"), [("bf16", (128, 128), False), ("fp32", (64, 32), True)]
)
def test_compiles_for_hopper(dtype: str, dims: tuple[int, int], has_w: bool) -> None:
    """The forward and backward kernels (and the per-channel gates' state pass) compile for sm_90
    with the default launch configuration at the benchmark's K = V = 128 (bf16) and with the
    delta rule's w input (fp32, IEEE products), within the 228 KiB of shared memory per block."""
    Kd, Vd = dims
    launch = gla_triton.DEFAULT_LAUNCH
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
    launch = gla_triton.DEFAULT_LAUNCH
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
    compare(inputs, segment_ids=segment_ids, chunk_size=64, tol=tol, implementation="triton")
