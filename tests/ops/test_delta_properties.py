"""Delta rule: property tests over random shapes, a long sequence, backward memory."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linmix.ops.delta import delta_rule, l2_normalize
from linmix.ops.delta.triangular import unit_lower_inverse
from linmix.testing.numerics import rel_err

FP32_TOL = 1e-4
BETAS = {"usual": (0.05, 0.95), "near_one": (0.99, 1.0), "above_one": (1.0, 1.9)}


def random_problem(rng: np.random.Generator, B, T, H, K, V, gated, strength, betas, n_segments):
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    q, k = (f32(rng.normal(size=(B, T, H, K))) for _ in range(2))
    v = f32(rng.normal(size=(B, T, H, V)))
    beta = f32(rng.uniform(*BETAS[betas], size=(B, T, H)))
    g = f32(-strength * rng.uniform(0.05, 1.5, size=(B, T, H))) if gated else None
    seg = None
    if n_segments > 1:
        seg = jnp.asarray(np.sort(rng.integers(0, n_segments, size=(B, T)), axis=1), jnp.int32)
    return q, k, v, beta, g, seg


@functools.partial(
    jax.jit, static_argnames=("implementation", "chunk_size", "with_state", "use_qk_l2norm")
)
def outputs_and_grads(
    q, k, v, beta, g, seg, S0, ct, *, implementation, chunk_size, with_state, use_qk_l2norm
):
    def loss(q, k, v, beta, g, S0):
        o, S = delta_rule(
            q, k, v, beta, g, initial_state=S0 if with_state else None,
            output_final_state=with_state, segment_ids=seg, chunk_size=chunk_size,
            use_qk_l2norm=use_qk_l2norm, implementation=implementation,
        )  # fmt: skip
        extra = jnp.sum(S * S) if with_state else 0.0
        return jnp.sum(o * ct) + extra, (o, S)

    argnums = (0, 1, 2, 3, 5) if g is None else (0, 1, 2, 3, 4, 5)
    grads, outs = jax.grad(loss, argnums=argnums, has_aux=True)(q, k, v, beta, g, S0)
    return outs, grads


@st.composite
def problems(draw):
    return dict(
        B=draw(st.integers(1, 2)),
        T=draw(st.integers(1, 100)),
        H=draw(st.integers(1, 2)),
        K=draw(st.integers(1, 12)),
        V=draw(st.integers(1, 12)),
        gated=draw(st.booleans()),
        strength=draw(st.sampled_from([0.01, 1.0, 5.0])),
        betas=draw(st.sampled_from(list(BETAS))),
        n_segments=draw(st.integers(1, 4)),
        chunk_size=draw(st.sampled_from([16, 32, 64])),
        with_state=draw(st.booleans()),
        use_qk_l2norm=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


@settings(max_examples=8, deadline=None, derandomize=True)
@given(problems())
def test_random_shapes_match_reference(p: dict) -> None:
    """Any shape, gate, write strength, segmentation, chunk size and state: chunked == oracle,
    outputs and gradients (keys normalised in the op or by the caller)."""
    rng = np.random.default_rng(p["seed"])
    B, T, H, K, V = p["B"], p["T"], p["H"], p["K"], p["V"]
    q, k, v, beta, g, seg = random_problem(
        rng, B, T, H, K, V, p["gated"], p["strength"], p["betas"], p["n_segments"]
    )
    if not p["use_qk_l2norm"]:
        k = l2_normalize(k)
    S0 = jnp.asarray(rng.normal(size=(B, H, K, V)), jnp.float32)
    ct = jnp.asarray(rng.normal(size=(B, T, H, V)), jnp.float32)
    kw = dict(
        chunk_size=p["chunk_size"], with_state=p["with_state"], use_qk_l2norm=p["use_qk_l2norm"]
    )
    got = outputs_and_grads(q, k, v, beta, g, seg, S0, ct, implementation="xla_chunked", **kw)
    want = outputs_and_grads(q, k, v, beta, g, seg, S0, ct, implementation="reference", **kw)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.isfinite(np.asarray(a)).all()
        assert rel_err(a, b) < FP32_TOL


@pytest.mark.parametrize("gated", [False, True])
def test_length_4096_saturated_writes(gated: bool) -> None:
    """T = 4096, beta in [0.99, 1] (every write nearly overwrites its key's slot), unit keys, no
    decay or a weak one: outputs, final state and all gradients finite and equal to the oracle
    (measured ~7e-7 relative error on CPU)."""
    B, T, H, K, V = 1, 4096, 1, 16, 16
    rng = np.random.default_rng(11)
    q, k, v, beta, g, _ = random_problem(rng, B, T, H, K, V, gated, 0.01, "near_one", 1)
    S0 = jnp.asarray(rng.normal(size=(B, H, K, V)), jnp.float32)
    ct = jnp.asarray(rng.normal(size=(B, T, H, V)), jnp.float32)
    kw = dict(chunk_size=64, with_state=True, use_qk_l2norm=True)
    got = outputs_and_grads(q, k, v, beta, g, None, S0, ct, implementation="xla_chunked", **kw)
    want = outputs_and_grads(q, k, v, beta, g, None, S0, ct, implementation="reference", **kw)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.isfinite(np.asarray(a)).all()
        assert rel_err(a, b) < FP32_TOL, rel_err(a, b)


def _grad_temp_bytes(implementation: str, B, T, H, K, V) -> int:
    q = jax.ShapeDtypeStruct((B, T, H, K), jnp.float32)
    v = jax.ShapeDtypeStruct((B, T, H, V), jnp.float32)
    beta = jax.ShapeDtypeStruct((B, T, H), jnp.float32)

    def loss(q, k, v, beta, g):
        return jnp.sum(delta_rule(q, k, v, beta, g, implementation=implementation)[0])

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4))).lower(q, q, v, beta, beta)
    return compiled.compile().memory_analysis().temp_size_in_bytes


def test_chunked_backward_stores_no_per_token_state() -> None:
    """Compiled fwd+bwd scratch memory of the chunked form grows with V far slower than one
    K x V state per token would make it; the per-token oracle (the yardstick) does store them."""
    B, T, H, K = 1, 512, 2, 64

    def growth(implementation: str) -> int:
        return _grad_temp_bytes(implementation, B, T, H, K, 128) - _grad_temp_bytes(
            implementation, B, T, H, K, 32
        )

    per_token_state_growth = B * T * H * K * (128 - 32) * 4
    assert growth("reference") > per_token_state_growth
    assert growth("xla_chunked") < per_token_state_growth / 4, (
        growth("xla_chunked"),
        per_token_state_growth,
    )


def test_unit_lower_inverse_matches_float64() -> None:
    """(I + A)^-1 by recursive doubling vs a float64 inverse, including the worst case for
    cancellation (all keys equal, beta = 1: the inverse is bidiagonal), and its closed-form
    gradient vs differentiating a triangular solve."""
    rng = np.random.default_rng(0)
    for C in (1, 2, 16, 64):
        k = rng.normal(size=(3, C, 8))
        k[2] = k[2, :1]
        k /= np.linalg.norm(k, axis=-1, keepdims=True)
        A = np.tril(rng.uniform(0.5, 1.0, size=(3, C, 1)) * (k @ k.transpose(0, 2, 1)), -1)
        A[2] = np.tril(np.ones((C, C)), -1)
        got = jax.jit(unit_lower_inverse)(jnp.asarray(A, jnp.float32))
        assert rel_err(got, np.linalg.inv(np.eye(C) + A)) < 1e-6, C
    A = jnp.asarray(A, jnp.float32)
    ct = jnp.asarray(rng.normal(size=A.shape), jnp.float32)
    eye = jnp.broadcast_to(jnp.eye(A.shape[-1]), A.shape)
    solve = lambda A: jax.scipy.linalg.solve_triangular(A, eye, lower=True, unit_diagonal=True)
    grad = jax.jit(jax.grad(lambda A: jnp.sum(unit_lower_inverse(A) * ct)))(A)
    want = jax.jit(jax.grad(lambda A: jnp.sum(solve(A) * ct)))(A)
    assert rel_err(jnp.tril(grad, -1), jnp.tril(want, -1)) < 1e-5
