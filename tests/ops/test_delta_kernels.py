"""Pallas kernels of the (gated) delta rule vs the per-token oracle (interpret mode on CPU,
natively with `pytest -m gpu` / on a TPU), forward and gradients, and their TPU / CUDA lowering.

The engine test matrix of `test_delta.py` (odd T, K != V, chunk sizes, gate strengths, write
strengths, segments, states, bf16) runs through the public `delta_rule(..., implementation=)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from numerics import rel_err
from test_delta import (
    BETAS,
    BF16_TOL,
    FP32_TOL,
    B,
    H,
    V,
    _random_segments,
    compare,
    make_inputs,
    normal,
    segments_from_starts,
)

from linmix.ops.delta import delta_rule, pallas_gpu, pallas_tpu

KERNELS = ["pallas_tpu", "pallas_gpu"]


@pytest.mark.parametrize(
    ("T", "gated"), [(1, False), (1, True), (63, True), (65, False), (200, True)]
)
@pytest.mark.parametrize("kernel", KERNELS)
def test_matches_reference(kernel: str, T: int, gated: bool) -> None:
    compare(make_inputs(T, gated), chunk_size=16, implementation=kernel)


@pytest.mark.parametrize(
    ("chunk_size", "gated"), [(16, True), (32, False), (64, True), (128, False)]
)
@pytest.mark.parametrize("kernel", KERNELS)
def test_chunk_sizes_and_segments(kernel: str, chunk_size: int, gated: bool) -> None:
    """Segment starts on and off chunk edges, a one-token segment, a one-token last segment."""
    T = 130
    segment_ids = segments_from_starts(T, [[1, 16, 20, 32, 64, 128, 129], [5, 65]])
    inputs = make_inputs(T, gated, seed=2)
    compare(inputs, segment_ids=segment_ids, chunk_size=chunk_size, implementation=kernel)


@pytest.mark.parametrize("kernel", KERNELS)
def test_gate_strengths_and_betas(kernel: str) -> None:
    """Weak (~-0.01 per step) and strong (~-5) decay, each with usual, saturated and
    negative-eigenvalue write strengths, over random packed segments."""
    T = 65
    for strength in [0.01, 5.0]:
        for betas in BETAS:
            inputs = make_inputs(T, True, strength=strength, betas=betas, seed=3)
            try:
                compare(inputs, segment_ids=_random_segments(T), implementation=kernel)
            except AssertionError as e:
                raise AssertionError(f"strength={strength}, betas={betas}: {e}") from e


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("kernel", KERNELS)
def test_no_state_matches_reference(kernel: str, gated: bool) -> None:
    inputs = {**make_inputs(70, gated, seed=5), "initial_state": None}
    compare(inputs, chunk_size=32, final=False, implementation=kernel)


@pytest.mark.parametrize("kernel", [*KERNELS, "triton"])
def test_inference_forward_matches_reference(kernel: str) -> None:
    """Not differentiated (the forward that writes no chunk states), with segments and states."""
    x = make_inputs(70, True, seed=6)
    args = [x[n] for n in ("q", "k", "v", "beta", "g")]
    kw = dict(initial_state=x["initial_state"], output_final_state=True, use_qk_l2norm=True,
              segment_ids=segments_from_starts(70, [[5, 40], [33]]), chunk_size=32)  # fmt: skip
    o, S = jax.jit(lambda *a: delta_rule(*a, implementation=kernel, **kw))(*args)
    o_ref, S_ref = delta_rule(*args, implementation="reference", **kw)
    assert rel_err(o, o_ref) < FP32_TOL and rel_err(S, S_ref) < FP32_TOL


@pytest.mark.parametrize("kernel", KERNELS)
def test_bf16_close_to_fp32_reference(kernel: str) -> None:
    """bf16 q, k, v, beta, g (fp32 inside the kernel) vs the fp32 oracle: outputs and grads."""
    T = 65
    inputs = make_inputs(T, True, seed=8)
    cotangent = jnp.asarray(normal(98, 0, (B, T, H, V)))
    names = ["q", "k", "v", "beta", "g"]

    def loss(args, impl):
        o, _ = delta_rule(
            *args, initial_state=inputs["initial_state"], use_qk_l2norm=True, implementation=impl
        )
        return jnp.sum(o.astype(jnp.float32) * cotangent), o

    args = [inputs[n] for n in names]
    grad_fn = jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)
    grads, o = grad_fn([x.astype(jnp.bfloat16) for x in args], kernel)
    assert o.dtype == jnp.bfloat16 and all(d.dtype == jnp.bfloat16 for d in grads)
    want_grads, want = grad_fn(args, "reference")
    assert rel_err(o, want) < BF16_TOL
    for name, d, w in zip(names, grads, want_grads, strict=True):
        assert rel_err(d, w) < BF16_TOL, (name, rel_err(d, w))


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
    lowered = _lower(pallas_tpu.delta_rule_pallas_tpu, "tpu", gated, segmented)
    assert lowered.as_text().count("tpu_custom_call") == 2


@pytest.mark.parametrize(("gated", "segmented"), [(False, False), (True, True)])
def test_gpu_lowering(gated: bool, segmented: bool) -> None:
    lowered = _lower(pallas_gpu.delta_rule_pallas_gpu, "cuda", gated, segmented)
    assert lowered.as_text().count("__gpu$xla.gpu.triton") == 2


@pytest.mark.gpu
@pytest.mark.parametrize("gated", [False, True])
def test_gpu_native_matches_reference(gated: bool) -> None:
    T = 200
    segment_ids = segments_from_starts(T, [[1, 16, 50, 128], [100]])
    inputs = make_inputs(T, gated, seed=1)
    compare(inputs, segment_ids=segment_ids, chunk_size=64, implementation="pallas_gpu")


@pytest.mark.tpu
@pytest.mark.parametrize("gated", [False, True])
def test_tpu_native_matches_reference(gated: bool) -> None:
    T = 200
    segment_ids = segments_from_starts(T, [[1, 16, 50, 128], [100]])
    inputs = make_inputs(T, gated, seed=1)
    compare(inputs, segment_ids=segment_ids, chunk_size=64, implementation="pallas_tpu")


def test_kernels_agree_with_each_other_at_length() -> None:
    """T = 1024 (16 chunks), beta near 1, mild decay: both kernels match the XLA chunked form."""
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
            for impl in ["xla", *KERNELS]
        }

    outs = run(args)
    for impl in KERNELS:
        assert rel_err(outs[impl], outs["xla"]) < 1e-5, impl
