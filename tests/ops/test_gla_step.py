"""Decode step of gated linear attention: a loop of gla_step equals gla, grads, validation."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linmix.ops.gla import gla
from linmix.ops.gla.step import gla_step
from linmix.testing.numerics import rel_err

B, H, K, V = 2, 2, 8, 12
FP32_TOL = 1e-4
# bf16 inputs vs the fp32 oracle on the unrounded inputs: input and output rounding alone give
# ~1e-2 relative error (bf16 keeps ~3 significant digits); the step itself computes in fp32.
BF16_TOL = 2e-2
# bf16 step loop vs bf16 chunked gla on the same rounded inputs: both compute in fp32, so they
# differ by little more than the final bf16 rounding of o (~2^-9 relative per element).
BF16_SAME_INPUT_TOL = 1e-2


@functools.cache
def _noise(seed: int) -> np.ndarray:
    """Standard normals from a fixed key, cut into tensors on the host (one sampler compile)."""
    return np.asarray(jax.random.normal(jax.random.key(seed), (6, 1 << 12)))


def normal(seed: int, slot: int, shape: tuple[int, ...]) -> np.ndarray:
    return _noise(seed)[slot, : int(np.prod(shape))].reshape(shape)


def make_inputs(T: int, gate: str | None, *, seed: int = 0) -> dict[str, jax.Array | None]:
    """Random q/k/v, a log-decay gate of the given kind in about [-0.7, -0.3], initial state."""
    g = None
    if gate is not None:
        shape = (B, T, H) if gate == "scalar" else (B, T, H, K)
        g = jnp.asarray(-0.5 * (1.0 + 0.4 * np.tanh(normal(seed, 3, shape))), jnp.float32)
    return dict(
        q=jnp.asarray(normal(seed, 0, (B, T, H, K)), jnp.float32),
        k=jnp.asarray(normal(seed, 1, (B, T, H, K)), jnp.float32),
        v=jnp.asarray(normal(seed, 2, (B, T, H, V)), jnp.float32),
        g=g,
        initial_state=jnp.asarray(normal(seed, 4, (B, H, K, V)), jnp.float32),
    )


@jax.jit
def step_loop(q, k, v, g, initial_state):
    """gla_step over every token (a scan over T); returns (o [B, T, H, V], final state)."""
    if initial_state is None:
        S0 = jnp.zeros((B, H, K, V), jnp.float32)
    else:  # the scan carry must keep one dtype: gla_step returns an fp32 state
        S0 = initial_state.astype(jnp.float32)

    def body(S, xs):
        q_t, k_t, v_t, g_t = xs
        o_t, S = gla_step(q_t, k_t, v_t, g_t, S)
        return S, o_t

    xs = tuple(None if x is None else jnp.moveaxis(x, 1, 0) for x in (q, k, v, g))
    S, o_TBHV = jax.lax.scan(body, S0, xs)
    return jnp.moveaxis(o_TBHV, 0, 1), S


@functools.partial(jax.jit, static_argnames=("implementation",))
def gla_jit(q, k, v, g, initial_state, *, implementation):
    return gla(
        q, k, v, g, initial_state=initial_state, output_final_state=True, chunk_size=16,
        implementation=implementation,
    )  # fmt: skip


@pytest.mark.parametrize("use_state", [False, True])
@pytest.mark.parametrize("gate", [None, "scalar", "vector"])
@pytest.mark.parametrize("T", [1, 37])
def test_step_loop_matches_gla(T: int, gate: str | None, use_state: bool) -> None:
    inputs = make_inputs(T, gate, seed=T)
    if not use_state:
        inputs["initial_state"] = None
    o, S = step_loop(**inputs)
    assert o.shape == (B, T, H, V) and o.dtype == jnp.float32
    assert S.shape == (B, H, K, V) and S.dtype == jnp.float32
    for implementation in ("reference", "xla_chunked"):
        o_want, S_want = gla_jit(**inputs, implementation=implementation)
        assert rel_err(o, o_want) < FP32_TOL, (implementation, rel_err(o, o_want))
        assert rel_err(S, S_want) < FP32_TOL, (implementation, rel_err(S, S_want))


@pytest.mark.parametrize("gate", ["scalar", "vector"])
def test_bf16_step_loop(gate: str) -> None:
    T = 37
    inputs = make_inputs(T, gate, seed=5)
    bf16 = {name: inputs[name].astype(jnp.bfloat16) for name in ("q", "k", "v", "initial_state")}
    o, S = step_loop(**{**inputs, **bf16})
    assert o.dtype == jnp.bfloat16 and S.dtype == jnp.float32
    o_ref, S_ref = gla_jit(**inputs, implementation="reference")
    assert rel_err(o, o_ref) < BF16_TOL
    assert rel_err(S, S_ref) < BF16_TOL
    o_same, S_same = gla_jit(**{**inputs, **bf16}, implementation="xla_chunked")
    assert rel_err(o, o_same) < BF16_SAME_INPUT_TOL
    assert rel_err(S, S_same) < FP32_TOL  # the fp32 state never goes through bf16


@functools.partial(jax.jit, static_argnames=("use_steps",))
def grads(inputs, cotangents, *, use_steps):
    def f(args):
        if use_steps:
            return step_loop(**args)
        return gla(
            args["q"], args["k"], args["v"], args["g"], initial_state=args["initial_state"],
            output_final_state=True, chunk_size=16,
        )  # fmt: skip

    outs, vjp = jax.vjp(f, inputs)
    return outs, vjp(cotangents)[0]


@pytest.mark.parametrize("gate", [None, "scalar", "vector"])
def test_step_loop_grads_match_chunked(gate: str | None) -> None:
    T = 40
    inputs = make_inputs(T, gate, seed=7)
    cotangents = (
        jnp.asarray(normal(99, 0, (B, T, H, V)), jnp.float32),
        jnp.asarray(normal(99, 1, (B, H, K, V)), jnp.float32),
    )
    _, got = grads(inputs, cotangents, use_steps=True)
    _, want = grads(inputs, cotangents, use_steps=False)
    for name in ("q", "k", "v", "g", "initial_state"):
        if inputs[name] is None:
            continue
        assert np.isfinite(np.asarray(got[name])).all(), name
        assert rel_err(got[name], want[name]) < FP32_TOL, (name, rel_err(got[name], want[name]))


@pytest.mark.parametrize("gate", [None, "scalar", "vector"])
def test_single_step_formula(gate: str | None) -> None:
    """One step against the formula in float64, with a custom scale and a bf16 state."""
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(2, B, H, K))
    v = rng.normal(size=(B, H, V))
    S = rng.normal(size=(B, H, K, V))
    a = np.ones((B, H, K))
    g = None
    if gate is not None:
        g = -rng.uniform(0.1, 2.0, size=(B, H) if gate == "scalar" else (B, H, K))
        a = np.broadcast_to(np.exp(g if gate == "vector" else g[..., None]), (B, H, K))
    S_bf16 = jnp.asarray(S, jnp.bfloat16)
    S_rounded = np.asarray(S_bf16, np.float64)
    S_want = a[..., None] * S_rounded + k[..., :, None] * v[..., None, :]
    o_want = 0.3 * np.einsum("bhk,bhkv->bhv", q, S_want)

    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    o, S_new = gla_step(f32(q), f32(k), f32(v), None if g is None else f32(g), S_bf16, scale=0.3)
    assert o.dtype == jnp.float32 and S_new.dtype == jnp.float32
    assert rel_err(S_new, S_want) < 1e-6
    assert rel_err(o, o_want) < 1e-6
    # Default scale is K**-0.5; the output dtype follows q.
    o_bf16, _ = gla_step(f32(q).astype(jnp.bfloat16), f32(k), f32(v), None, f32(S))
    assert o_bf16.dtype == jnp.bfloat16
    S_nodecay = S + k[..., :, None] * v[..., None, :]
    assert rel_err(o_bf16, K**-0.5 * np.einsum("bhk,bhkv->bhv", q, S_nodecay)) < BF16_TOL


def _bad_inputs() -> list[tuple[str, str, dict]]:
    ok = dict(
        q_t=jnp.ones((B, H, K)),
        k_t=jnp.ones((B, H, K)),
        v_t=jnp.ones((B, H, V)),
        g_t=None,
        state=jnp.ones((B, H, K, V)),
    )
    return [
        ("q rank", "q_t", dict(ok, q_t=jnp.ones((B, 1, H, K)))),
        ("k rank", "k_t", dict(ok, k_t=jnp.ones((B, H * K)))),
        ("v rank", "v_t", dict(ok, v_t=jnp.ones((B, H, 1, V)))),
        ("k batch", "k_t", dict(ok, k_t=jnp.ones((B + 1, H, K)))),
        ("k heads", "k_t", dict(ok, k_t=jnp.ones((B, H + 1, K)))),
        ("k key dim", "k_t", dict(ok, k_t=jnp.ones((B, H, K + 1)))),
        ("v batch", "v_t", dict(ok, v_t=jnp.ones((B + 1, H, V)))),
        ("v heads", "v_t", dict(ok, v_t=jnp.ones((B, H + 1, V)))),
        ("g value dim", "g_t", dict(ok, g_t=jnp.ones((B, H, V)))),
        ("g rank", "g_t", dict(ok, g_t=jnp.ones((B,)))),
        ("g with time", "g_t", dict(ok, g_t=jnp.ones((B, 1, H)))),
        ("state transposed", "state", dict(ok, state=jnp.ones((B, H, V, K)))),
        ("state rank", "state", dict(ok, state=jnp.ones((B, H, K)))),
        ("state dtype", "state", dict(ok, state=jnp.ones((B, H, K, V), jnp.int32))),
    ]


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
def test_validation_errors(case: tuple[str, str, dict]) -> None:
    _, name, kwargs = case
    with pytest.raises(ValueError, match=name):
        gla_step(**kwargs)
