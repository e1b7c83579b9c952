"""Decode step of the delta rule: a loop of delta_rule_step equals delta_rule, grads, validation."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linmix.ops.delta import delta_rule, delta_rule_step, l2_normalize
from linmix.testing.numerics import rel_err

B, H, K, V = 2, 2, 16, 24
FP32_TOL = 1e-4
# bf16 inputs vs the fp32 oracle on the unrounded inputs: input and output rounding alone give
# ~1e-2 relative error (bf16 keeps ~3 significant digits); the step itself computes in fp32.
BF16_TOL = 2e-2


def make_inputs(T: int, gated: bool, *, seed: int = 0) -> dict[str, jax.Array | None]:
    """Raw q/k/v (normalised inside the op), beta in (0, 1), log-decay in [-0.7, -0.3]."""
    rng = np.random.default_rng(seed)
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    return dict(
        q=f32(rng.normal(size=(B, T, H, K))),
        k=f32(rng.normal(size=(B, T, H, K))),
        v=f32(rng.normal(size=(B, T, H, V))),
        beta=f32(rng.uniform(0.05, 0.95, size=(B, T, H))),
        g=f32(-rng.uniform(0.3, 0.7, size=(B, T, H))) if gated else None,
        initial_state=f32(rng.normal(size=(B, H, K, V))),
    )


@jax.jit
def step_loop(q, k, v, beta, g, initial_state):
    """delta_rule_step over every token (a scan over T); returns (o [B, T, H, V], final state)."""
    if initial_state is None:
        S0 = jnp.zeros((B, H, K, V), jnp.float32)
    else:  # the scan carry must keep one dtype: delta_rule_step returns an fp32 state
        S0 = initial_state.astype(jnp.float32)

    def body(S, xs):
        q_t, k_t, v_t, beta_t, g_t = xs
        o_t, S = delta_rule_step(q_t, k_t, v_t, beta_t, g_t, S, use_qk_l2norm=True)
        return S, o_t

    xs = tuple(None if x is None else jnp.moveaxis(x, 1, 0) for x in (q, k, v, beta, g))
    S, o_TBHV = jax.lax.scan(body, S0, xs)
    return jnp.moveaxis(o_TBHV, 0, 1), S


@functools.partial(jax.jit, static_argnames=("implementation",))
def chunked(q, k, v, beta, g, initial_state, *, implementation="xla_chunked"):
    return delta_rule(
        q, k, v, beta, g, initial_state=initial_state, output_final_state=True, chunk_size=16,
        use_qk_l2norm=True, implementation=implementation,
    )  # fmt: skip


@pytest.mark.parametrize("use_state", [False, True])
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("T", [1, 37])
def test_step_loop_matches_chunked(T: int, gated: bool, use_state: bool) -> None:
    inputs = make_inputs(T, gated, seed=T)
    if not use_state:
        inputs["initial_state"] = None
    o, S = step_loop(**inputs)
    assert o.shape == (B, T, H, V) and o.dtype == jnp.float32
    assert S.shape == (B, H, K, V) and S.dtype == jnp.float32
    for implementation in ("reference", "xla_chunked"):
        o_want, S_want = chunked(**inputs, implementation=implementation)
        assert rel_err(o, o_want) < FP32_TOL, (implementation, rel_err(o, o_want))
        assert rel_err(S, S_want) < FP32_TOL, (implementation, rel_err(S, S_want))


def test_bf16_step_loop() -> None:
    T = 37
    inputs = make_inputs(T, True, seed=5)
    bf16 = {n: inputs[n].astype(jnp.bfloat16) for n in ("q", "k", "v", "beta", "g")}
    o, S = step_loop(**{**inputs, **bf16})
    assert o.dtype == jnp.bfloat16 and S.dtype == jnp.float32
    o_ref, S_ref = chunked(**inputs, implementation="reference")
    assert rel_err(o, o_ref) < BF16_TOL
    assert rel_err(S, S_ref) < BF16_TOL


@functools.partial(jax.jit, static_argnames=("use_steps",))
def grads(inputs, cotangents, *, use_steps):
    def f(args):
        return step_loop(**args) if use_steps else chunked(**args)

    outs, vjp = jax.vjp(f, inputs)
    return outs, vjp(cotangents)[0]


@pytest.mark.parametrize("gated", [False, True])
def test_step_loop_grads_match_chunked(gated: bool) -> None:
    T = 40
    inputs = make_inputs(T, gated, seed=7)
    rng = np.random.default_rng(99)
    cotangents = (
        jnp.asarray(rng.normal(size=(B, T, H, V)), jnp.float32),
        jnp.asarray(rng.normal(size=(B, H, K, V)), jnp.float32),
    )
    _, got = grads(inputs, cotangents, use_steps=True)
    _, want = grads(inputs, cotangents, use_steps=False)
    for name in ("q", "k", "v", "beta", "g", "initial_state"):
        if inputs[name] is None:
            continue
        assert np.isfinite(np.asarray(got[name])).all(), name
        assert rel_err(got[name], want[name]) < FP32_TOL, (name, rel_err(got[name], want[name]))


@pytest.mark.parametrize("gated", [False, True])
def test_single_step_formula(gated: bool) -> None:
    """One step against the row-convention formula in float64, with a custom scale, a bf16
    state and raw (unnormalised) keys:
    S' = a (I - beta k^T k) S + beta k^T v, o = scale q S'."""
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(2, B, H, K))
    v = rng.normal(size=(B, H, V))
    beta = rng.uniform(0.1, 1.0, size=(B, H))
    g = -rng.uniform(0.1, 2.0, size=(B, H)) if gated else None
    a = np.exp(g) if gated else np.ones((B, H))
    S_bf16 = jnp.asarray(rng.normal(size=(B, H, K, V)), jnp.bfloat16)
    S = np.asarray(S_bf16, np.float64)
    kkS = np.einsum("bhk,bhj,bhjv->bhkv", k, k, S)
    S_want = a[..., None, None] * (S - beta[..., None, None] * kkS)
    S_want = S_want + beta[..., None, None] * k[..., :, None] * v[..., None, :]
    o_want = 0.3 * np.einsum("bhk,bhkv->bhv", q, S_want)

    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    g32 = None if g is None else f32(g)
    o, S_new = delta_rule_step(f32(q), f32(k), f32(v), f32(beta), g32, S_bf16, scale=0.3)
    assert o.dtype == jnp.float32 and S_new.dtype == jnp.float32
    assert rel_err(S_new, S_want) < 1e-6
    assert rel_err(o, o_want) < 1e-6
    # Default scale is K**-0.5; the output dtype follows q; use_qk_l2norm normalises q and k.
    o_bf16, S_norm = delta_rule_step(
        f32(q).astype(jnp.bfloat16), f32(k), f32(v), f32(beta), g32, S_bf16, use_qk_l2norm=True
    )
    assert o_bf16.dtype == jnp.bfloat16
    qn, kn = l2_normalize(f32(q)), l2_normalize(f32(k))
    o_n, S_n = delta_rule_step(qn, kn, f32(v), f32(beta), g32, S_bf16, scale=K**-0.5)
    assert rel_err(S_norm, S_n) < 1e-6
    assert rel_err(o_bf16, o_n) < BF16_TOL


def _bad_inputs() -> list[tuple[str, str, dict]]:
    ok = dict(
        q_t=jnp.ones((B, H, K)),
        k_t=jnp.ones((B, H, K)),
        v_t=jnp.ones((B, H, V)),
        beta_t=jnp.ones((B, H)),
        g_t=None,
        state=jnp.ones((B, H, K, V)),
    )
    return [
        ("q rank", "q_t", dict(ok, q_t=jnp.ones((B, 1, H, K)))),
        ("k rank", "k_t", dict(ok, k_t=jnp.ones((B, H * K)))),
        ("v rank", "v_t", dict(ok, v_t=jnp.ones((B, H, 1, V)))),
        ("k heads", "k_t", dict(ok, k_t=jnp.ones((B, H + 1, K)))),
        ("k key dim", "k_t", dict(ok, k_t=jnp.ones((B, H, K + 1)))),
        ("v batch", "v_t", dict(ok, v_t=jnp.ones((B + 1, H, V)))),
        ("beta per channel", "beta_t", dict(ok, beta_t=jnp.ones((B, H, K)))),
        ("beta rank", "beta_t", dict(ok, beta_t=jnp.ones((B,)))),
        ("g per channel", "g_t", dict(ok, g_t=jnp.ones((B, H, K)))),
        ("g with time", "g_t", dict(ok, g_t=jnp.ones((B, 1, H)))),
        ("state transposed", "state", dict(ok, state=jnp.ones((B, H, V, K)))),
        ("state rank", "state", dict(ok, state=jnp.ones((B, H, K)))),
        ("state dtype", "state", dict(ok, state=jnp.ones((B, H, K, V), jnp.int32))),
    ]


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
def test_validation_errors(case: tuple[str, str, dict]) -> None:
    _, name, kwargs = case
    with pytest.raises(ValueError, match=name):
        delta_rule_step(**kwargs)
