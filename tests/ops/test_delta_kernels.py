"""The kernels of the (gated) delta rule beyond the contract suite (`test_contract.py`, which
holds every implementation to the oracle on one matrix): the inference forward, agreement at
length, TPU / CUDA lowering from this CPU host, and the native GPU / TPU checks (`-m gpu`,
`-m tpu`). The Mosaic GPU and jax_triton forms run the WY transform in XLA and the state
recurrence u = U - W S in the kernels of the linear recurrence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from linmix.ops.delta import delta_rule, pallas_mosaic_tpu, pallas_triton
from linmix.ops.delta.pallas_mosaic_gpu import delta_rule_pallas_mosaic_gpu
from linmix.testing.delta import (
    FP32_TOL,
    H,
    compare,
    make_inputs,
    segments_from_starts,
)
from linmix.testing.numerics import rel_err

KERNELS = ["pallas_mosaic_tpu", "pallas_triton"]
_16BIT_TOL = 1e-2  # the 16-bit kernels' declared bound (linmix.ops.delta.api.CAPABILITIES)


@pytest.mark.parametrize("kernel", [*KERNELS, "jax_triton"])
def test_inference_forward_matches_reference(kernel: str) -> None:
    """Not differentiated (the forward that writes no chunk states), with segments and states."""
    x = make_inputs(70, True, seed=6)
    args = [x[n] for n in ("q", "k", "v", "beta", "g")]
    kw = dict(initial_state=x["initial_state"], output_final_state=True, use_qk_l2norm=True,
              segment_ids=segments_from_starts(70, [[5, 40], [33]]), chunk_size=32)  # fmt: skip
    o, S = jax.jit(lambda *a: delta_rule(*a, implementation=kernel, **kw))(*args)
    o_ref, S_ref = delta_rule(*args, implementation="reference", **kw)
    assert rel_err(o, o_ref) < FP32_TOL and rel_err(S, S_ref) < FP32_TOL


def _lower(op, platform: str, gated: bool, segmented: bool):
    """Forward + backward at paper-sized heads (K = V = 128, bf16, chunks of 64)."""
    T = 256
    q = jnp.zeros((1, T, 2, 128), jnp.bfloat16)
    beta = jnp.zeros((1, T, 2))
    g = jnp.zeros((1, T, 2)) if gated else None
    segment_ids = jnp.zeros((1, T), jnp.int32) if segmented else None

    def loss(q, k, v, beta, g):
        o, S = op(
            q, k, v, beta, g, scale=0.1, initial_state=None, segment_ids=segment_ids,
            chunk_size=64, interpret=False,
        )  # fmt: skip
        return jnp.sum(o) + jnp.sum(S)

    grad = jax.grad(loss, argnums=(0, 1, 2, 3, 4) if gated else (0, 1, 2, 3))
    return jax.jit(grad).trace(q, q, q, beta, g).lower(lowering_platforms=(platform,))


@pytest.mark.parametrize(("gated", "segmented"), [(False, False), (True, True)])
def test_tpu_lowering_default_blocks(gated: bool, segmented: bool) -> None:
    lowered = _lower(pallas_mosaic_tpu.delta_rule_pallas_mosaic_tpu, "tpu", gated, segmented)
    assert lowered.as_text().count("tpu_custom_call") == 2


@pytest.mark.parametrize(("gated", "segmented"), [(False, False), (True, True)])
def test_gpu_lowering(gated: bool, segmented: bool) -> None:
    lowered = _lower(pallas_triton.delta_rule_pallas_triton, "cuda", gated, segmented)
    assert lowered.as_text().count("__gpu$xla.gpu.triton") == 2


@pytest.mark.gpu
@pytest.mark.parametrize("gated", [False, True])
def test_gpu_native_matches_reference(gated: bool) -> None:
    T = 200
    segment_ids = segments_from_starts(T, [[1, 16, 50, 128], [100]])
    inputs = make_inputs(T, gated, seed=1)
    compare(inputs, segment_ids=segment_ids, chunk_size=64, implementation="pallas_triton")


@pytest.mark.tpu
@pytest.mark.parametrize("gated", [False, True])
def test_tpu_native_matches_reference(gated: bool) -> None:
    T = 200
    segment_ids = segments_from_starts(T, [[1, 16, 50, 128], [100]])
    inputs = make_inputs(T, gated, seed=1)
    compare(inputs, segment_ids=segment_ids, chunk_size=64, implementation="pallas_mosaic_tpu")


def test_kernels_agree_with_each_other_at_length() -> None:
    """T = 1024 (16 chunks), beta near 1, mild decay: both kernels match the chunked XLA form."""
    T = 1024
    kq, kk, kv = jax.random.split(jax.random.key(11), 3)
    q, k = (jax.random.normal(key, (1, T, H, 32)) for key in (kq, kk))
    v = jax.random.normal(kv, (1, T, H, 32))
    beta = jnp.full((1, T, H), 0.99)
    g = jnp.full((1, T, H), -0.01)
    args = [q, k, v, beta, g]

    @jax.jit
    def run(args):
        return {
            impl: delta_rule(*args, use_qk_l2norm=True, chunk_size=64, implementation=impl)[0]
            for impl in ["xla_chunked", *KERNELS]
        }

    outs = run(args)
    for impl in KERNELS:
        assert rel_err(outs[impl], outs["xla_chunked"]) < 1e-5, impl


@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.parametrize("gated", [False, True])
def test_mosaic_gpu_cuda_lowering(gated: bool, segmented: bool) -> None:
    """Forward and backward lower through Mosaic GPU for CUDA at K = V = 128, from CPU."""
    lowered = _lower(delta_rule_pallas_mosaic_gpu, "cuda", gated, segmented)
    assert lowered.as_text().count("custom_call @mosaic_gpu") == 2


def _cast(inputs: dict, dtype) -> dict:
    return {n: (x.astype(dtype) if n in ("q", "k", "v") else x) for n, x in inputs.items()}


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("implementation", "dtype"),
    [
        ("pallas_mosaic_gpu", jnp.bfloat16),
        ("jax_triton", jnp.float32),
        ("jax_triton", jnp.bfloat16),
    ],
)
def test_gpu_native_16_bit_kernels(implementation: str, dtype) -> None:
    T = 200
    segment_ids = segments_from_starts(T, [[1, 16, 50, 128], [100]])
    inputs = _cast(make_inputs(T, True, seed=1), dtype)
    tol = FP32_TOL if dtype == jnp.float32 else _16BIT_TOL
    compare(inputs, segment_ids=segment_ids, chunk_size=64, tol=tol, implementation=implementation)
