"""Gated delta rule: the chunked form vs the per-token oracle, semantics and validation."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linmix.ops.delta import delta_rule, l2_normalize
from linmix.testing.delta import (
    BETAS,
    BF16_TOL,
    FP32_TOL,
    B,
    H,
    K,
    V,
    compare,
    make_inputs,
    normal,
    segments_from_starts,
)
from linmix.testing.numerics import rel_err


@pytest.mark.parametrize(
    ("T", "gated"),
    [(1, False), (1, True), (63, True), (64, False), (65, True), (200, False), (200, True)],
)
def test_matches_reference(T: int, gated: bool) -> None:
    compare(make_inputs(T, gated), chunk_size=16)


@pytest.mark.parametrize(("chunk_size", "gated"), [(32, True), (64, False), (128, True)])
def test_chunk_sizes_match_reference(chunk_size: int, gated: bool) -> None:
    """T = 200 is 1 5/8 chunks of 128 and 6 1/4 of 32; segment starts on and off chunk edges."""
    T = 200
    segment_ids = segments_from_starts(T, [[1, 32, 50, 128, 199], [100]])
    compare(make_inputs(T, gated, seed=1), segment_ids=segment_ids, chunk_size=chunk_size)


@pytest.mark.parametrize(("chunk_size", "gated"), [(16, True), (64, False)])
def test_segments_match_reference(chunk_size: int, gated: bool) -> None:
    T = 130
    # Boundaries at chunk edges (16, 32, 64, 128), one token in (1), a one-token last segment
    # (129), and a row whose whole second half is a single segment.
    segment_ids = segments_from_starts(T, [[1, 16, 20, 32, 64, 128, 129], [5, 65]])
    compare(make_inputs(T, gated, seed=2), segment_ids=segment_ids, chunk_size=chunk_size)


def _random_segments(T: int) -> jax.Array:
    segment_ids = jnp.sort(jax.random.randint(jax.random.key(7), (B, T), 0, 6), axis=1)
    assert len(np.unique(segment_ids[0])) > 2
    return segment_ids


@pytest.mark.parametrize("gated", [False, True])
def test_gate_strengths_and_betas(gated: bool) -> None:
    """No decay, or weak (~-0.01 per step) and strong decay (~-5 per step: every decay across a
    chunk underflows), each with usual, saturated and negative-eigenvalue write strengths, over
    random packed segments. (One test per gate kind: the cases share one compilation.)"""
    T = 65
    for strength in [0.01, 5.0] if gated else [1.0]:
        for betas in BETAS:
            inputs = make_inputs(T, gated, strength=strength, betas=betas, seed=3)
            try:
                compare(inputs, segment_ids=_random_segments(T), chunk_size=16)
            except AssertionError as e:
                raise AssertionError(f"strength={strength}, betas={betas}: {e}") from e


@pytest.mark.parametrize("gated", [False, True])
def test_normalised_keys_without_in_op_norm(gated: bool) -> None:
    """use_qk_l2norm=False with keys normalised by the caller (q left raw)."""
    T = 65
    inputs = make_inputs(T, gated, seed=4)
    inputs["k"] = l2_normalize(inputs["k"])
    compare(inputs, segment_ids=_random_segments(T), chunk_size=16, use_qk_l2norm=False)


@pytest.mark.parametrize("gated", [False, True])
def test_no_state_matches_reference(gated: bool) -> None:
    inputs = {**make_inputs(130, gated, seed=5), "initial_state": None}
    compare(inputs, chunk_size=64, final=False)


@pytest.mark.parametrize("gated", [False, True])
def test_bf16_close_to_fp32_reference(gated: bool) -> None:
    """bf16 q, k, v, beta, g (fp32 accumulation inside) vs the fp32 oracle: outputs and grads."""
    T = 65
    inputs = make_inputs(T, gated, seed=8)
    cotangent = jnp.asarray(normal(98, 0, (B, T, H, V)))
    names = ["q", "k", "v", "beta"] + (["g"] if gated else [])

    def loss(args, impl):
        o, _ = delta_rule(
            *args, initial_state=inputs["initial_state"], chunk_size=64, use_qk_l2norm=True,
            implementation=impl,
        )  # fmt: skip
        return jnp.sum(o.astype(jnp.float32) * cotangent), o

    args = [inputs[n] for n in names]
    bf16 = [x.astype(jnp.bfloat16) for x in args]
    grad_fn = jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)
    grads, o = grad_fn(bf16, "xla_chunked")
    assert o.dtype == jnp.bfloat16 and all(d.dtype == jnp.bfloat16 for d in grads)
    want_grads, want = grad_fn(args, "reference")
    assert rel_err(o, want) < BF16_TOL
    for name, d, w in zip(names, grads, want_grads, strict=True):
        assert rel_err(d, w) < BF16_TOL, (name, rel_err(d, w))


def test_extreme_decay_is_finite() -> None:
    """g ~ -1e4 per step: every decay underflows to 0, nothing overflows, in fwd and grads. Each
    step then starts from a zero state: S_t = beta_t k_t^T v_t, o_t = scale beta_t (q_t.k_t) v_t."""
    T = 40
    inputs = make_inputs(T, True, strength=1e4, seed=6)
    args = [inputs[n] for n in ("q", "k", "v", "beta", "g")]

    def loss(*args):
        o, S = delta_rule(
            *args, initial_state=inputs["initial_state"], output_final_state=True, chunk_size=64,
            use_qk_l2norm=True,
        )  # fmt: skip
        return jnp.sum(o**2) + jnp.sum(S**2), o

    grads, o = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True))(*args)
    for x in grads:
        assert np.isfinite(np.asarray(x)).all()
    q, k = l2_normalize(inputs["q"]), l2_normalize(inputs["k"])
    qk = jnp.sum(q * k, axis=-1, keepdims=True)
    diag = K**-0.5 * inputs["beta"][..., None] * qk * inputs["v"]
    assert rel_err(o, diag) < FP32_TOL


@pytest.mark.parametrize("gated", [False, True])
def test_packed_equals_separate_documents(gated: bool) -> None:
    """Packing documents with segment_ids == running each document on its own."""
    T = 70
    starts = [0, 9, 16, 50, 51]  # includes a chunk-edge start (16) and a one-token document
    segment_ids = segments_from_starts(T, [starts] * B)
    inputs = make_inputs(T, gated, seed=9)
    q, k, v, beta, g = (inputs[n] for n in ("q", "k", "v", "beta", "g"))
    S0 = inputs["initial_state"]
    o, S = jax.jit(
        functools.partial(delta_rule, output_final_state=True, chunk_size=16, use_qk_l2norm=True)
    )(q, k, v, beta, g, initial_state=S0, segment_ids=segment_ids)
    bounds = [*starts, T]
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        o_doc, S_doc = _reference_jit(
            q[:, lo:hi], k[:, lo:hi], v[:, lo:hi], beta[:, lo:hi],
            None if g is None else g[:, lo:hi], S0 if i == 0 else None,
        )  # fmt: skip
        assert rel_err(o[:, lo:hi], o_doc) < FP32_TOL, (lo, hi)
    assert rel_err(S, S_doc) < FP32_TOL


@jax.jit
def _reference_jit(q, k, v, beta, g, initial_state):
    return delta_rule(
        q, k, v, beta, g, initial_state=initial_state, output_final_state=True,
        use_qk_l2norm=True, implementation="reference",
    )  # fmt: skip


def test_defaults_and_output_types() -> None:
    inputs = make_inputs(5, True)
    q, k, v, beta, g = (inputs[n] for n in ("q", "k", "v", "beta", "g"))
    jit_rule = jax.jit(delta_rule, static_argnames=("scale", "output_final_state"))
    o, S = jit_rule(q, k, v, beta, g)
    assert o.shape == (B, 5, H, V) and o.dtype == jnp.float32 and S is None
    o16, S = jit_rule(q.astype(jnp.bfloat16), k, v, beta, output_final_state=True)
    assert o16.dtype == jnp.bfloat16
    assert S.shape == (B, H, K, V) and S.dtype == jnp.float32
    # The default scale is K**-0.5.
    o_scaled, _ = jit_rule(q, k, v, beta, g, scale=K**-0.5)
    assert rel_err(o, o_scaled) < 1e-7
    # beta = 0 writes nothing: the state keeps its initial value and o_t = scale q_t S_0.
    S0 = inputs["initial_state"]
    o, S = jit_rule(q, k, v, 0 * beta, initial_state=S0, output_final_state=True, scale=0.5)
    assert rel_err(S, S0) < 1e-7
    assert rel_err(o, 0.5 * jnp.einsum("bthk,bhkv->bthv", q, S0, precision="highest")) < 1e-6


def test_in_op_l2norm_equals_normalised_inputs() -> None:
    inputs = make_inputs(37, True, seed=10)
    q, k, v, beta, g = (inputs[n] for n in ("q", "k", "v", "beta", "g"))
    kw = dict(initial_state=inputs["initial_state"], output_final_state=True, chunk_size=16)
    rule = jax.jit(functools.partial(delta_rule, **kw), static_argnames=("use_qk_l2norm",))
    o, S = rule(q, k, v, beta, g, use_qk_l2norm=True)
    o_want, S_want = rule(l2_normalize(q), l2_normalize(k), v, beta, g)
    assert rel_err(o, o_want) < 1e-6 and rel_err(S, S_want) < 1e-6
    assert rel_err(jnp.linalg.norm(l2_normalize(k), axis=-1), jnp.ones((B, 37, H))) < 1e-6


def _bad_inputs() -> list[tuple[str, str, dict]]:
    q = jnp.ones((B, 8, H, K))
    v = jnp.ones((B, 8, H, V))
    ok = dict(q=q, k=q, v=v, beta=jnp.ones((B, 8, H)))
    return [
        ("rank", "q must have rank 4", dict(ok, q=jnp.ones((B, 8, H * K)))),
        ("v rank", "v must have rank 4", dict(ok, v=jnp.ones((B, 8, H, V, 1)))),
        ("k batch", "k must have the shape", dict(ok, k=jnp.ones((B + 1, 8, H, K)))),
        ("k heads", "k must have the shape", dict(ok, k=jnp.ones((B, 8, H + 1, K)))),
        ("key dim", "k must have the shape", dict(ok, k=jnp.ones((B, 8, H, K + 1)))),
        ("v time", "v must be", dict(ok, v=jnp.ones((B, 9, H, V)))),
        ("beta shape", "beta must be", dict(ok, beta=jnp.ones((B, 8, H, 1)))),
        ("beta time", "beta must be", dict(ok, beta=jnp.ones((B, 7, H)))),
        ("g per channel", "g must be", dict(ok, g=jnp.ones((B, 8, H, K)))),
        ("g rank", "g must be", dict(ok, g=jnp.ones((B, 8)))),
        ("int q", "q must have a float dtype", dict(ok, q=q.astype(jnp.int32))),
        ("state shape", "initial_state must be", dict(ok, initial_state=jnp.ones((B, H, V, K)))),
        ("state dtype", "initial_state must have a float", dict(
            ok, initial_state=jnp.ones((B, H, K, V), jnp.int32))),
        ("segment shape", "segment_ids must be", dict(
            ok, segment_ids=jnp.zeros((B, 7), jnp.int32))),
        ("segment dtype", "segment_ids must have an integer", dict(
            ok, segment_ids=jnp.zeros((B, 8), jnp.float32))),
        ("chunk not pow2", "chunk_size", dict(ok, chunk_size=48)),
        ("chunk zero", "chunk_size", dict(ok, chunk_size=0)),
        ("chunk float", "chunk_size", dict(ok, chunk_size=64.0)),
        ("implementation", "implementation must be one of", dict(ok, implementation="pallas")),
        ("positive g", "g must be log-decays <= 0", dict(ok, g=jnp.full((B, 8, H), 0.1))),
        ("decreasing segments", "non-decreasing", dict(
            ok, segment_ids=jnp.array([[0, 0, 1, 1, 2, 1, 2, 2]] * B, jnp.int32))),
    ]  # fmt: skip


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
def test_validation_errors(case: tuple[str, str, dict]) -> None:
    _, message, kwargs = case
    with pytest.raises(ValueError, match=message):
        delta_rule(**kwargs)


def test_unknown_implementation_names_choices() -> None:
    q = jnp.ones((1, 2, 1, 4))
    with pytest.raises(ValueError, match="xla"):
        delta_rule(q, q, q, jnp.ones((1, 2, 1)), implementation="cuda")
