"""Bad input from Python fails with a ValueError naming it: non-float q/k/v/gates for every op,
mixed dtypes where an implementation declares them unsupported, and, through
`linmix.ops.checked`, the value checks (log-decays <= 0, sorted segment ids, token ids in the
vocabulary) under jit and inside jax.grad, as eager calls already raise."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import linmix.ops
from linmix.ops.attention import attention
from linmix.ops.delta import delta_rule, delta_rule_step
from linmix.ops.gla import gla, gla_step
from linmix.ops.gla.api import CAPABILITIES
from linmix.ops.ssm import selective_scan, selective_scan_step
from linmix.testing.models import make

nnx.set_graph_mode(False)

B, T, H, K = 1, 16, 2, 8
F32 = jnp.float32


def _ones(*shape, dtype=F32):
    return jnp.ones(shape, dtype)


def _calls(dtype):
    """Each op called with `dtype` as the dtype of its first argument, everything else fp32."""
    q, x = _ones(B, T, H, K, dtype=dtype), _ones(B, T, 4, dtype=dtype)
    f, f3 = _ones(B, T, H, K), _ones(B, T, H)
    step_q, step_f, state = _ones(B, H, K, dtype=dtype), _ones(B, H, K), _ones(B, H, K, K)
    beta_t = _ones(B, H)
    A, Bm = -_ones(4, 3), _ones(B, T, 3)
    return {
        "gla": lambda: gla(q, f, f, -f3),
        "gla_step": lambda: gla_step(step_q, step_f, step_f, None, state),
        "delta_rule": lambda: delta_rule(q, f, f, f3),
        "delta_rule_step": lambda: delta_rule_step(step_q, step_f, step_f, beta_t, None, state),
        "selective_scan": lambda: selective_scan(x, _ones(B, T, 4), A, Bm, Bm),
        "selective_scan_step": lambda: selective_scan_step(
            x[:, 0], _ones(B, 4), A, Bm[:, 0], Bm[:, 0]
        ),
        "attention": lambda: attention(q, f, f),
    }


@pytest.mark.parametrize("op", list(_calls(F32)))
def test_integer_inputs_raise_naming_the_argument(op):
    _calls(F32)[op]()  # the fp32 call is fine
    first = "x" if op.startswith("selective_scan") else "q"
    with pytest.raises(ValueError, match=f"{first}(_t)? must have a float dtype, got int32"):
        _calls(jnp.int32)[op]()


def test_integer_gates_and_beta_raise():
    f, f3 = _ones(B, T, H, K), _ones(B, T, H)
    with pytest.raises(ValueError, match="g must have a float dtype"):
        gla(f, f, f, jnp.zeros((B, T, H), jnp.int32))
    with pytest.raises(ValueError, match="beta must have a float dtype"):
        delta_rule(f, f, f, f3.astype(jnp.int32))
    with pytest.raises(ValueError, match="dt must have a float dtype"):
        selective_scan(f3, f3.astype(jnp.int32), -_ones(H, 3), _ones(B, T, 3), _ones(B, T, 3))


def test_mixed_dtypes_raise_where_declared_unsupported():
    f32, bf16 = _ones(B, T, H, 16), _ones(B, T, H, 16, dtype=jnp.bfloat16)
    assert not CAPABILITIES["jax_triton"].mixed_dtypes
    with pytest.raises(ValueError, match="mixed dtypes bfloat16/float32/float32"):
        gla(bf16, f32, f32, implementation="jax_triton")
    f16 = bf16.astype(jnp.float16)
    with pytest.raises(ValueError, match="mixed dtypes bfloat16/float16/bfloat16"):
        gla(bf16, f16, bf16, implementation="pallas_mosaic_gpu")
    o, _ = gla(bf16, f32, f32)  # the default implementation declares mixed dtypes
    assert o.dtype == jnp.bfloat16


def _gla_inputs():
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(kk, (B, T, H, K)) for kk in keys[:3])
    g = -jax.nn.softplus(jax.random.normal(keys[3], (B, T, H)))
    seg = jnp.asarray(np.repeat([[0, 1]], T // 2, axis=1), jnp.int32)
    return q, k, v, g, seg


def test_checked_gla_raises_on_bad_values_and_matches_on_good_ones():
    q, k, v, g, seg = _gla_inputs()
    run = linmix.ops.checked(lambda q, k, v, g, seg: gla(q, k, v, g, segment_ids=seg)[0])
    want, _ = gla(q, k, v, g, segment_ids=seg)
    np.testing.assert_array_equal(run(q, k, v, g, seg), want)
    with pytest.raises(ValueError, match="g must be log-decays <= 0, got a maximum of 0.5"):
        run(q, k, v, g.at[0, 3, 1].set(0.5), seg)
    with pytest.raises(ValueError, match="segment_ids must be non-decreasing"):
        run(q, k, v, g, seg.at[0, -1].set(0))
    # plain jit stays unchecked
    jax.jit(lambda g: gla(q, k, v, g)[0])(g.at[0, 3, 1].set(0.5))


def test_checked_under_grad():
    q, k, v, g, seg = _gla_inputs()

    def grads(q, g, seg):
        loss = lambda q, g: jnp.sum(gla(q, k, v, g, segment_ids=seg)[0] ** 2)  # noqa: E731
        return jax.grad(loss, argnums=(0, 1))(q, g)

    run = linmix.ops.checked(grads)
    for a, b in zip(run(q, g, seg), jax.jit(grads)(q, g, seg), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="g must be log-decays <= 0"):
        run(q, g.at[0, 0, 0].set(1.0), seg)
    with pytest.raises(ValueError, match="segment_ids must be non-decreasing"):
        run(q, g, seg.at[0, 0].set(5))


def test_checked_delta_and_ssm_values():
    q, k, v, g, _ = _gla_inputs()
    beta = jnp.full((B, T, H), 0.5)
    run = linmix.ops.checked(lambda g: delta_rule(q, k, v, beta, g)[0])
    with pytest.raises(ValueError, match="g must be log-decays <= 0"):
        run(g.at[0, 1, 0].set(0.1))
    x = jnp.ones((B, T, 4))
    scan = linmix.ops.checked(lambda A: selective_scan(x, x, A, x[..., :3], x[..., :3])[0])
    with pytest.raises(ValueError, match="A must be decay rates <= 0"):
        scan(jnp.ones((4, 3)))


def test_lm_out_of_vocabulary_tokens_raise():
    model = make("gla", num_layers=1)
    vocab = model.embed.num_embeddings
    good, bad = jnp.asarray([[1, 2, 3, 4]]), jnp.asarray([[1, 2, vocab, 4]])
    with pytest.raises(ValueError, match=rf"token ids must be in \[0, {vocab}\)"):
        model(bad)
    with pytest.raises(ValueError, match=rf"token ids must be in \[0, {vocab}\)"):
        model.hidden(-bad)
    run = linmix.ops.checked(lambda m, t: m(t))
    assert np.isfinite(run(model, good)).all()
    with pytest.raises(ValueError, match=rf"token ids must be in \[0, {vocab}\), got ids from 1"):
        run(model, bad)
