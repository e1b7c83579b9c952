"""Gated linear attention: property tests over random shapes, long sequences, memory, normalise."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linmix.ops.gla import features, gla, gla_step
from linmix.ops.gla.scan import MAX_STATE_BYTES
from linmix.testing.numerics import rel_err

FP32_TOL = 1e-4


def random_problem(rng: np.random.Generator, B, T, H, K, V, gate, strength=1.0, n_segments=1):
    q, k = (jnp.asarray(rng.normal(size=(B, T, H, K)), jnp.float32) for _ in range(2))
    v = jnp.asarray(rng.normal(size=(B, T, H, V)), jnp.float32)
    g = None
    if gate is not None:
        shape = (B, T, H) if gate == "scalar" else (B, T, H, K)
        g = jnp.asarray(-strength * rng.uniform(0.05, 1.5, size=shape), jnp.float32)
    seg = None
    if n_segments > 1:
        seg = jnp.asarray(np.sort(rng.integers(0, n_segments, size=(B, T)), axis=1), jnp.int32)
    return q, k, v, g, seg


@functools.partial(
    jax.jit, static_argnames=("implementation", "causal", "chunk_size", "with_state")
)
def outputs_and_grads(q, k, v, g, seg, S0, ct, *, implementation, causal, chunk_size, with_state):
    def loss(q, k, v, g, S0):
        o, S = gla(
            q, k, v, g, initial_state=S0 if with_state else None, output_final_state=with_state,
            segment_ids=seg, causal=causal, chunk_size=chunk_size, implementation=implementation,
        )  # fmt: skip
        extra = jnp.sum(S * S) if with_state else 0.0
        return jnp.sum(o * ct) + extra, (o, S)

    argnums = (0, 1, 2, 4) if g is None else (0, 1, 2, 3, 4)
    grads, outs = jax.grad(loss, argnums=argnums, has_aux=True)(q, k, v, g, S0)
    return outs, grads


@st.composite
def problems(draw):
    return dict(
        B=draw(st.integers(1, 2)),
        T=draw(st.integers(1, 150)),
        H=draw(st.integers(1, 3)),
        K=draw(st.integers(1, 12)),
        V=draw(st.integers(1, 12)),
        gate=draw(st.sampled_from([None, "scalar", "vector"])),
        strength=draw(st.sampled_from([0.01, 1.0, 10.0])),
        n_segments=draw(st.integers(1, 4)),
        chunk_size=draw(st.sampled_from([16, 32, 64, 128])),
        causal=draw(st.booleans()),
        with_state=draw(st.booleans()),
        implementation=draw(st.sampled_from(["xla_chunked", "associative_scan"])),
        seed=draw(st.integers(0, 2**16)),
    )


@settings(max_examples=12, deadline=None, derandomize=True)
@given(problems())
def test_random_shapes_match_reference(p: dict) -> None:
    """Any shape, gate kind, strength, segmentation, chunk size and mode: form == oracle."""
    rng = np.random.default_rng(p["seed"])
    B, T, H, K, V = p["B"], p["T"], p["H"], p["K"], p["V"]
    q, k, v, g, seg = random_problem(rng, B, T, H, K, V, p["gate"], p["strength"], p["n_segments"])
    with_state = p["with_state"] and p["causal"]
    S0 = jnp.asarray(rng.normal(size=(B, H, K, V)), jnp.float32)
    ct = jnp.asarray(rng.normal(size=(B, T, H, V)), jnp.float32)
    kw = dict(causal=p["causal"], chunk_size=p["chunk_size"], with_state=with_state)
    got = outputs_and_grads(q, k, v, g, seg, S0, ct, implementation=p["implementation"], **kw)
    want = outputs_and_grads(q, k, v, g, seg, S0, ct, implementation="reference", **kw)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.isfinite(np.asarray(a)).all()
        assert rel_err(a, b) < FP32_TOL


@pytest.mark.parametrize("gate", ["scalar", "vector"])
@pytest.mark.parametrize("strength", [1e-3, 20.0])
def test_length_65536_stays_finite_and_accurate(gate: str, strength: float) -> None:
    """T = 65536 at reduced width: weak decays (whole-sequence products ~ e^-65) and strong ones
    (~ -20 per step), fp32 and bf16 inputs: finite, and fp32 outputs, final state and gradients
    equal to the per-token oracle."""
    B, T, H, K, V = 1, 65536, 1, 4, 4
    q, k, v, g, _ = random_problem(np.random.default_rng(11), B, T, H, K, V, gate, strength)
    rng = np.random.default_rng(12)
    S0 = jnp.asarray(rng.normal(size=(B, H, K, V)), jnp.float32)
    ct = jnp.asarray(rng.normal(size=(B, T, H, V)), jnp.float32)
    kw = dict(causal=True, chunk_size=64, with_state=True)
    got = outputs_and_grads(q, k, v, g, None, S0, ct, implementation="xla_chunked", **kw)
    want = outputs_and_grads(q, k, v, g, None, S0, ct, implementation="reference", **kw)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.isfinite(np.asarray(a)).all()
        assert rel_err(a, b) < FP32_TOL
    bf16 = [x.astype(jnp.bfloat16) for x in (q, k, v, g)]
    o16, S16 = jax.jit(lambda *a: gla(*a, initial_state=S0, output_final_state=True))(*bf16)
    assert o16.dtype == jnp.bfloat16 and np.isfinite(np.asarray(o16, np.float32)).all()
    assert rel_err(o16, want[0][0]) < 2e-2 and rel_err(S16, want[0][1]) < 2e-2


def _grad_temp_bytes(implementation: str, gate: str | None, B, T, H, K, V) -> int:
    q = jax.ShapeDtypeStruct((B, T, H, K), jnp.float32)
    v = jax.ShapeDtypeStruct((B, T, H, V), jnp.float32)
    g = {None: None, "scalar": (B, T, H), "vector": (B, T, H, K)}[gate]
    g = None if g is None else jax.ShapeDtypeStruct(g, jnp.float32)

    def loss(q, k, v, g):
        return jnp.sum(gla(q, k, v, g, implementation=implementation)[0])

    argnums = (0, 1, 2) if g is None else (0, 1, 2, 3)
    compiled = jax.jit(jax.grad(loss, argnums=argnums)).lower(q, q, v, g).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("gate", [None, "scalar", "vector"])
def test_chunked_backward_stores_no_per_token_state(gate: str | None) -> None:
    """Compiled fwd+bwd scratch memory of the chunked form grows with V far slower than one
    K x V state per token would make it; the associative scan (the yardstick) does store them.
    (Growth in V, because a vector gate's [c, c, K] decay tensors are per token but not K x V.)"""
    B, T, H, K = 1, 512, 2, 64

    def growth(implementation: str) -> int:
        return _grad_temp_bytes(implementation, gate, B, T, H, K, 128) - _grad_temp_bytes(
            implementation, gate, B, T, H, K, 32
        )

    per_token_state_growth = B * T * H * K * (128 - 32) * 4
    assert growth("associative_scan") > per_token_state_growth
    assert growth("xla_chunked") < per_token_state_growth / 4, (
        growth("xla_chunked"),
        per_token_state_growth,
    )


def test_associative_scan_refuses_states_over_the_limit() -> None:
    B, H, K, V = 1, 1, 64, 64
    T = MAX_STATE_BYTES // (B * H * K * V * 4) + 1
    q = jnp.zeros((B, T, H, K), jnp.float32)
    with pytest.raises(ValueError, match="implementation='xla_chunked'"):
        jax.eval_shape(lambda q: gla(q, q, q, implementation="associative_scan"), q)


@pytest.mark.parametrize("gate", [None, "scalar", "vector"])
@pytest.mark.parametrize("implementation", ["xla_chunked", "associative_scan", "reference"])
def test_normalize_equals_explicit_denominator(implementation: str, gate: str | None) -> None:
    """normalize=True == with_denominator + divide_by_denominator, causal (with the V + 1 state)
    and bidirectional, for every form."""
    B, T, H, K, V = 2, 37, 2, 6, 5
    q, k, v, g, seg = random_problem(np.random.default_rng(3), B, T, H, K, V, gate, 1.0, 3)
    q, k = features.elu1(q), features.elu1(k)
    S0 = jnp.abs(jnp.asarray(np.random.default_rng(4).normal(size=(B, H, K, V + 1)), jnp.float32))
    kw = dict(segment_ids=seg, chunk_size=16, implementation=implementation)
    o, S = gla(q, k, v, g, initial_state=S0, output_final_state=True, normalize=True, **kw)
    o_num, S_want = gla(
        q, k, features.with_denominator(v), g, initial_state=S0, output_final_state=True, **kw
    )
    assert S.shape == (B, H, K, V + 1)
    assert rel_err(o, features.divide_by_denominator(o_num)) < FP32_TOL
    assert rel_err(S, S_want) < FP32_TOL
    o_bi, _ = gla(q, k, v, g, causal=False, normalize=True, **kw)
    o_bi_num, _ = gla(q, k, features.with_denominator(v), g, causal=False, **kw)
    assert rel_err(o_bi, features.divide_by_denominator(o_bi_num)) < FP32_TOL


def test_normalized_decode_steps_equal_chunked() -> None:
    B, T, H, K, V = 2, 20, 2, 6, 5
    q, k, v, g, _ = random_problem(np.random.default_rng(5), B, T, H, K, V, "vector")
    q, k = features.elu1(q), features.elu1(k)
    o, S = gla(q, k, v, g, output_final_state=True, normalize=True, chunk_size=16)
    state = jnp.zeros((B, H, K, V + 1), jnp.float32)
    steps = []
    for t in range(T):
        o_t, state = gla_step(q[:, t], k[:, t], v[:, t], g[:, t], state, normalize=True)
        steps.append(o_t)
    assert rel_err(jnp.stack(steps, axis=1), o) < FP32_TOL
    assert rel_err(state, S) < FP32_TOL


def test_normalize_rejects_a_state_without_the_denominator_column() -> None:
    q = jnp.ones((1, 4, 1, 3))
    v = jnp.ones((1, 4, 1, 2))
    with pytest.raises(ValueError, match=r"V \+ 1"):
        gla(q, q, v, initial_state=jnp.ones((1, 1, 3, 2)), normalize=True)
