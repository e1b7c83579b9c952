"""Pallas kernels of gated linear attention vs the per-token oracle (interpret mode on CPU,
natively with `pytest -m gpu` / on a TPU), forward and gradients, and their TPU / CUDA lowering.

The matrix of problems every implementation must pass is the contract suite's
(`test_contract.py`); here: extreme decays, the inference forward and the lowering checks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linmix.ops.gla import gla, pallas_mosaic_tpu, pallas_triton
from linmix.testing.gla import (
    FP32_TOL,
    B,
    H,
    K,
    check_inference_forward,
    compare,
    make_inputs,
    segments_from_starts,
)
from linmix.testing.numerics import rel_err

KERNELS = ["pallas_mosaic_tpu", "pallas_triton"]
GATES = [None, "scalar", "vector"]


@pytest.mark.parametrize("kernel", KERNELS)
def test_extreme_decay_is_finite(kernel: str) -> None:
    """g ~ -1e4 per step: decays underflow to 0 and nothing overflows, forward or backward."""
    inputs = make_inputs(40, "vector", strength=1e4, seed=6)
    q, k, v, g = (inputs[n] for n in "qkvg")

    def loss(q, k, v, g):
        o, S = gla(
            q, k, v, g, initial_state=inputs["initial_state"], output_final_state=True,
            chunk_size=32, implementation=kernel,
        )  # fmt: skip
        return jnp.sum(o**2) + jnp.sum(S**2), o

    grads, o = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(q, k, v, g)
    assert all(np.isfinite(np.asarray(x)).all() for x in grads)
    diag = K**-0.5 * jnp.sum(q * k, axis=-1, keepdims=True) * v
    assert rel_err(o, diag) < FP32_TOL


def _lowering_inputs(gate: str | None, segmented: bool, T: int = 256):
    """Paper-sized heads (K = V = 128) in bf16, the shapes the default blocks are made for."""
    q = jnp.zeros((1, T, 2, 128), jnp.bfloat16)
    g = None if gate is None else jnp.zeros((1, T, 2) + ((128,) if gate == "vector" else ()))
    segment_ids = jnp.zeros((1, T), jnp.int32) if segmented else None
    return q, g, segment_ids


def _lower(op, platform: str, gate: str | None, segmented: bool, chunk_size: int):
    q, g, segment_ids = _lowering_inputs(gate, segmented)

    def loss(q, k, v, g):
        o, S = op(
            q, k, v, g, scale=0.1, initial_state=None, segment_ids=segment_ids,
            chunk_size=chunk_size, interpret=False,
        )  # fmt: skip
        return jnp.sum(o) + jnp.sum(S)

    grad = jax.grad(loss, argnums=(0, 1, 2) if g is None else (0, 1, 2, 3))
    return jax.jit(grad).trace(q, q, q, g).lower(lowering_platforms=(platform,))


@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.parametrize("gate", GATES)
def test_tpu_lowering_default_blocks(gate: str | None, segmented: bool) -> None:
    """Forward and backward kernels lower through Mosaic for TPU, from this CPU host."""
    lowered = _lower(
        pallas_mosaic_tpu.gla_pallas_mosaic_tpu,
        "tpu",
        gate,
        segmented,
        pallas_mosaic_tpu.DEFAULT_BLOCKS.chunk,
    )
    assert lowered.as_text().count("tpu_custom_call") == 2


@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.parametrize("gate", GATES)
def test_gpu_lowering(gate: str | None, segmented: bool) -> None:
    """Forward and backward kernels lower through Pallas' Triton path for CUDA, from CPU."""
    lowered = _lower(pallas_triton.gla_pallas_triton, "cuda", gate, segmented, 64)
    assert lowered.as_text().count("__gpu$xla.gpu.triton") == 2


@pytest.mark.parametrize("implementation", KERNELS)
def test_inference_writes_no_chunk_states(implementation: str) -> None:
    """Not differentiated, the forward kernels skip the chunk states the backward needs: the
    oracle's outputs, the differentiated forward's bit for bit, no [B*H, N, K, V] kernel output
    (N = 4 chunks of 16; the GPU kernels pad K = 8 and V = 12 to 16), and the inference kernel
    lowers for its hardware."""
    states = (
        f"f32[{B * H},4,8,12]" if implementation == "pallas_mosaic_tpu" else f"f32[{B * H},4,16,16]"
    )
    inputs = make_inputs(64, "scalar", seed=5)
    check_inference_forward(inputs, implementation, states, chunk_size=16)

    op = (
        pallas_mosaic_tpu.gla_pallas_mosaic_tpu
        if implementation == "pallas_mosaic_tpu"
        else pallas_triton.gla_pallas_triton
    )
    q, g, _ = _lowering_inputs("scalar", False)
    kw = dict(scale=0.1, initial_state=None, segment_ids=None, chunk_size=64, interpret=False)
    platform = "tpu" if implementation == "pallas_mosaic_tpu" else "cuda"
    text = jax.jit(lambda q, g: op(q, q, q, g, **kw)).trace(q, g).lower(
        lowering_platforms=(platform,)
    ).as_text()  # fmt: skip
    assert text.count("tpu_custom_call" if platform == "tpu" else "__gpu$xla.gpu.triton") == 1


@pytest.mark.gpu
@pytest.mark.parametrize("gate", GATES)
def test_gpu_native_matches_reference(gate: str | None) -> None:
    """On a GPU the kernels compile natively; same checks as in interpret mode."""
    T = 200
    segment_ids = segments_from_starts(T, [[1, 16, 50, 128], [100]])
    compare(make_inputs(T, gate, seed=1), segment_ids=segment_ids, implementation="pallas_triton")


@pytest.mark.tpu
@pytest.mark.parametrize("gate", GATES)
def test_tpu_native_matches_reference(gate: str | None) -> None:
    T = 200
    segment_ids = segments_from_starts(T, [[1, 16, 50, 128], [100]])
    compare(
        make_inputs(T, gate, seed=1), segment_ids=segment_ids, implementation="pallas_mosaic_tpu"
    )
