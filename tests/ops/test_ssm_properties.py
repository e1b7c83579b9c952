"""Selective scan: property test over random shapes, a 65536-token sequence, backward memory."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from linmix.ops.ssm import selective_scan
from linmix.testing.numerics import rel_err
from linmix.testing.ssm import random_problem

FP32_TOL = 1e-4


@functools.partial(jax.jit, static_argnames=("implementation", "chunk_size"))
def outputs_and_grads(p, seg, ct, *, implementation, chunk_size):
    """(y, final state) and the gradients of <y, ct> + |final state|^2 w.r.t. every input."""

    def loss(p):
        y, h = selective_scan(
            **p, output_final_state=True, segment_ids=seg, chunk_size=chunk_size,
            implementation=implementation,
        )  # fmt: skip
        return jnp.sum(y * ct) + jnp.sum(h * h), (y, h)

    grads, outs = jax.grad(loss, has_aux=True)(p)
    return outs, grads


@st.composite
def problems(draw):
    groups = draw(st.sampled_from([None, 1, 2, 3]))
    return dict(
        Bt=draw(st.integers(1, 2)),
        T=draw(st.integers(1, 150)),
        Dc=(groups or 1) * draw(st.integers(1, 3)),
        N=draw(st.integers(1, 5)),
        groups=groups,
        log_delta=draw(st.sampled_from([-6.0, -1.0, 1.5])),
        n_segments=draw(st.integers(1, 4)),
        chunk_size=draw(st.sampled_from([16, 32, 64, 128])),
        implementation=draw(st.sampled_from(["xla_chunked", "associative_scan"])),
        seed=draw(st.integers(0, 2**16)),
    )


@settings(max_examples=8, deadline=None, derandomize=True)
@given(problems())
def test_random_shapes_match_reference(q: dict) -> None:
    """Any shape, grouping, decay strength, segmentation and chunk size: form == oracle, for the
    outputs, the final state and the gradients of every input."""
    rng = np.random.default_rng(q["seed"])
    p, seg = random_problem(
        rng, q["Bt"], q["T"], q["Dc"], q["N"], q["groups"], q["log_delta"], q["n_segments"]
    )
    ct = jnp.asarray(rng.normal(size=p["x"].shape), jnp.float32)
    got = outputs_and_grads(
        p, seg, ct, implementation=q["implementation"], chunk_size=q["chunk_size"]
    )
    want = outputs_and_grads(p, seg, ct, implementation="reference", chunk_size=16)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.isfinite(np.asarray(a)).all()
        assert rel_err(a, b) < FP32_TOL


def test_length_65536_strong_decay_is_finite_and_accurate() -> None:
    """T = 65536 at tiny width with strong decays (delta |A| ~ 2..30 per step, so a product over
    the whole sequence is far below fp32 range): finite, and outputs, final state and every
    gradient equal to the per-token oracle."""
    p, _ = random_problem(np.random.default_rng(11), 1, 65536, 2, 2, None, log_delta=1.5)
    ct = jnp.asarray(np.random.default_rng(12).normal(size=p["x"].shape), jnp.float32)
    got = outputs_and_grads(p, None, ct, implementation="xla_chunked", chunk_size=64)
    want = outputs_and_grads(p, None, ct, implementation="reference", chunk_size=64)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.isfinite(np.asarray(a)).all()
        assert rel_err(a, b) < FP32_TOL


def _grad_temp_bytes(Bt: int, T: int, Dc: int, N: int) -> int:
    x = jax.ShapeDtypeStruct((Bt, T, Dc), jnp.float32)
    BC = jax.ShapeDtypeStruct((Bt, T, N), jnp.float32)
    A = jax.ShapeDtypeStruct((Dc, N), jnp.float32)

    def loss(x, dt, A, B, C):
        return jnp.sum(selective_scan(x, dt, A, B, C, chunk_size=64)[0])

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4))).lower(x, x, A, BC, BC).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_chunked_backward_stores_no_per_token_state() -> None:
    """Compiled fwd + bwd scratch memory of the chunked form grows with T far slower than one
    Dc x N state per token would make it: per chunk of C = 64 tokens it keeps a few boundary
    states and per token only [Dc]-sized tensors (inputs, their gradients). One chunk's per-token
    [C, Dc, M] temporaries are a constant that cancels in the difference."""
    Bt, Dc, N = 1, 32, 64
    growth = _grad_temp_bytes(Bt, 8192, Dc, N) - _grad_temp_bytes(Bt, 2048, Dc, N)
    per_token_state_growth = Bt * (8192 - 2048) * Dc * N * 4
    assert growth < per_token_state_growth / 4, (growth, per_token_state_growth)
