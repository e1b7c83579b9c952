"""Gated linear attention: every form vs the per-token oracle, semantics and validation."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linmix.ops.gla import gla
from linmix.testing.gla import (
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

FORMS = ["xla_chunked", "associative_scan"]
GATES = [None, "scalar", "vector"]


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("T", [1, 63, 64, 65, 200])
@pytest.mark.parametrize("implementation", FORMS)
def test_matches_reference(implementation: str, T: int, gate: str | None) -> None:
    compare(make_inputs(T, gate), chunk_size=16, implementation=implementation)


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("chunk_size", [32, 64, 128])
def test_chunk_sizes_match_reference(chunk_size: int, gate: str | None) -> None:
    """T = 200 is 1 5/8 chunks of 128 and 6 1/4 of 32; segment starts on and off chunk edges."""
    T = 200
    segment_ids = segments_from_starts(T, [[1, 32, 50, 128, 199], [100]])
    compare(make_inputs(T, gate, seed=1), segment_ids=segment_ids, chunk_size=chunk_size)


@pytest.mark.parametrize("gate", GATES)
def test_no_state_matches_reference(gate: str | None) -> None:
    inputs = {**make_inputs(130, gate, seed=1), "initial_state": None}
    compare(inputs, chunk_size=64, final=False)


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize(
    ("implementation", "chunk_size"),
    [("xla_chunked", 16), ("xla_chunked", 64), ("associative_scan", 16)],
)
def test_segments_match_reference(implementation: str, chunk_size: int, gate: str | None) -> None:
    T = 130
    # Boundaries at chunk edges (16, 32, 64, 128), one token in (1), a one-token last segment
    # (129), and a row whose whole second half is a single segment.
    segment_ids = segments_from_starts(T, [[1, 16, 20, 32, 64, 128, 129], [5, 65]])
    inputs = make_inputs(T, gate, seed=2)
    compare(inputs, segment_ids=segment_ids, chunk_size=chunk_size, implementation=implementation)


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("implementation", FORMS)
def test_random_segments_match_reference(implementation: str, gate: str | None) -> None:
    T = 65
    segment_ids = jnp.sort(jax.random.randint(jax.random.key(7), (B, T), 0, 6), axis=1)
    assert len(np.unique(segment_ids[0])) > 2
    inputs = make_inputs(T, gate, seed=3)
    compare(inputs, segment_ids=segment_ids, chunk_size=16, implementation=implementation)


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize(("T", "segmented"), [(7, False), (65, False), (65, True)])
@pytest.mark.parametrize("implementation", FORMS)
def test_bidirectional_matches_reference(
    implementation: str, T: int, gate: str | None, segmented: bool
) -> None:
    segment_ids = segments_from_starts(T, [[3, 16], [32]]) if segmented else None
    inputs = make_inputs(T, gate, seed=4)
    compare(
        inputs, segment_ids=segment_ids, causal=False, chunk_size=16, implementation=implementation
    )


@pytest.mark.parametrize("gate", ["scalar", "vector"])
@pytest.mark.parametrize("strength", [0.01, 20.0])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
    ("implementation", "chunk_size"),
    [("xla_chunked", 16), ("xla_chunked", 64), ("associative_scan", 16)],
)
def test_gate_strengths(
    implementation: str, chunk_size: int, gate: str, strength: float, causal: bool
) -> None:
    T = 65
    segment_ids = segments_from_starts(T, [[16, 40], [33]])
    inputs = make_inputs(T, gate, strength=strength, seed=5)
    compare(
        inputs,
        segment_ids=segment_ids,
        causal=causal,
        chunk_size=chunk_size,
        implementation=implementation,
    )


@pytest.mark.parametrize("gate", ["scalar", "vector"])
@pytest.mark.parametrize("implementation", FORMS)
def test_extreme_decay_is_finite(implementation: str, gate: str) -> None:
    """g ~ -1e4 per step: every decay underflows to 0, nothing overflows, in fwd and grads."""
    T = 40
    inputs = make_inputs(T, gate, strength=1e4, seed=6)
    q, k, v, g = inputs["q"], inputs["k"], inputs["v"], inputs["g"]

    def loss(q, k, v, g):
        o, S = gla(
            q, k, v, g, initial_state=inputs["initial_state"], output_final_state=True,
            chunk_size=64, implementation=implementation,
        )  # fmt: skip
        return jnp.sum(o**2) + jnp.sum(S**2), o

    grads, o = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(q, k, v, g)
    for x in grads:
        assert np.isfinite(np.asarray(x)).all()
    # With all decays ~0 the output is just the diagonal term scale * (q_t . k_t) v_t.
    diag = K**-0.5 * jnp.sum(q * k, axis=-1, keepdims=True) * v
    assert rel_err(o, diag) < FP32_TOL


@pytest.mark.parametrize("gate", ["scalar", "vector"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("implementation", FORMS)
def test_bf16_close_to_fp32_reference(implementation: str, gate: str, causal: bool) -> None:
    """bf16 q, k, v, g (fp32 accumulation inside) vs the fp32 oracle: outputs and gradients."""
    T = 65
    inputs = make_inputs(T, gate, seed=8)
    state = dict(initial_state=inputs["initial_state"]) if causal else {}
    cotangent = jnp.asarray(normal(98, 0, (B, T, H, V)))

    def loss(args, impl):
        o, _ = gla(*args, causal=causal, chunk_size=64, implementation=impl, **state)
        return jnp.sum(o.astype(jnp.float32) * cotangent), o

    args = [inputs[n] for n in "qkvg"]
    bf16 = [x.astype(jnp.bfloat16) for x in args]
    grad_fn = jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)
    grads, o = grad_fn(bf16, implementation)
    assert o.dtype == jnp.bfloat16 and all(d.dtype == jnp.bfloat16 for d in grads)
    want_grads, want = grad_fn(args, "reference")
    assert rel_err(o, want) < BF16_TOL
    for name, d, w in zip("qkvg", grads, want_grads, strict=True):
        assert rel_err(d, w) < BF16_TOL, (name, rel_err(d, w))


@pytest.mark.parametrize("gate", ["scalar", "vector"])
@pytest.mark.parametrize("causal", [True, False])
def test_packed_equals_separate_documents(gate: str | None, causal: bool) -> None:
    """Packing documents with segment_ids == running each document on its own."""
    T = 70
    starts = [0, 9, 16, 50, 51]  # includes a chunk-edge start (16) and a one-token document
    segment_ids = segments_from_starts(T, [starts] * B)
    inputs = make_inputs(T, gate, seed=9)
    q, k, v, g = inputs["q"], inputs["k"], inputs["v"], inputs["g"]
    S0 = inputs["initial_state"] if causal else None
    o, S = gla(
        q, k, v, g, initial_state=S0, output_final_state=causal, segment_ids=segment_ids,
        causal=causal, chunk_size=16,
    )  # fmt: skip
    bounds = [*starts, T]
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        o_doc, S_doc = _reference_jit(
            q[:, lo:hi], k[:, lo:hi], v[:, lo:hi], g[:, lo:hi], S0 if i == 0 else None,
            causal=causal,
        )  # fmt: skip
        assert rel_err(o[:, lo:hi], o_doc) < FP32_TOL, (lo, hi)
    if causal:
        assert rel_err(S, S_doc) < FP32_TOL


@functools.partial(jax.jit, static_argnames=("causal",))
def _reference_jit(q, k, v, g, initial_state, *, causal):
    return gla(
        q, k, v, g, initial_state=initial_state, output_final_state=causal, causal=causal,
        implementation="reference",
    )  # fmt: skip


def test_defaults_and_output_types() -> None:
    inputs = make_inputs(5, "scalar")
    o, S = gla(inputs["q"], inputs["k"], inputs["v"], inputs["g"])
    assert o.shape == (B, 5, H, V) and o.dtype == jnp.float32 and S is None
    o, S = gla(inputs["q"], inputs["k"], inputs["v"], output_final_state=True)
    assert S.shape == (B, H, K, V) and S.dtype == jnp.float32
    # No decay, no segments: the final state is just sum_t k_t^T v_t.
    want = jnp.einsum("bthk,bthv->bhkv", inputs["k"], inputs["v"], precision="highest")
    assert rel_err(S, want) < FP32_TOL


def _bad_inputs() -> list[tuple[str, dict]]:
    q = jnp.ones((B, 8, H, K))
    v = jnp.ones((B, 8, H, V))
    ok = dict(q=q, k=q, v=v)
    return [
        ("rank", dict(ok, q=jnp.ones((B, 8, H * K)))),
        ("heads", dict(ok, k=jnp.ones((B, 8, H + 1, K)))),
        ("key dim", dict(ok, k=jnp.ones((B, 8, H, K + 1)))),
        ("v time", dict(ok, v=jnp.ones((B, 9, H, V)))),
        ("g shape", dict(ok, g=jnp.ones((B, 8, H, V)))),
        ("g rank", dict(ok, g=jnp.ones((B, 8)))),
        ("state shape", dict(ok, initial_state=jnp.ones((B, H, V, K)))),
        ("segment shape", dict(ok, segment_ids=jnp.zeros((B, 7), jnp.int32))),
        ("segment dtype", dict(ok, segment_ids=jnp.zeros((B, 8), jnp.float32))),
        ("chunk not pow2", dict(ok, chunk_size=48)),
        ("chunk zero", dict(ok, chunk_size=0)),
        ("implementation", dict(ok, implementation="pallas")),
        ("bidirectional state", dict(ok, causal=False, output_final_state=True)),
        ("bidirectional init", dict(ok, causal=False, initial_state=jnp.ones((B, H, K, V)))),
        ("positive g", dict(ok, g=jnp.full((B, 8, H), 0.1))),
        (
            "decreasing segments",
            dict(ok, segment_ids=jnp.array([[0, 0, 1, 1, 2, 1, 2, 2]] * B, jnp.int32)),
        ),
    ]


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
def test_validation_errors(case: tuple[str, dict]) -> None:
    with pytest.raises(ValueError):
        gla(**case[1])


def test_unknown_implementation_names_choices() -> None:
    q = jnp.ones((1, 2, 1, 4))
    with pytest.raises(ValueError, match="xla"):
        gla(q, q, q, implementation="cuda")
