"""HGRN2 against its per-token recurrence S_t = diag(f_t) S_{t-1} + (1 - f_t)^T i_t, the lower
bound on the forget gate, and its own short-conv path (no SiLU on the forget logits)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linmix.models import REGISTRY, ModelConfig

nnx.set_graph_mode(False)

BASE = dict(vocab_size=64, d_model=16, num_layers=1, num_heads=2, mlp_ratio=0.0, chunk_size=4)


def make(**options):
    cfg = ModelConfig(**{**BASE, "mixer": "hgrn2", "mixer_options": {"expand_ratio": 8, **options}})
    return REGISTRY["hgrn2"](cfg, rngs=nnx.Rngs(0))


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.mark.parametrize("use_lower_bound", [True, False])
def test_recurrence(use_lower_bound):
    m = make(use_lower_bound=use_lower_bound, lower_bound_init=0.3)
    if use_lower_bound:  # distinct bounds per channel
        m.lower_bound[...] = jnp.linspace(-2.0, 2.0, 16)
    x = jax.random.normal(jax.random.key(1), (1, 7, BASE["d_model"]))
    q, f, i = (np.asarray(p(x), np.float64)[0] for p in (m.q, m.f, m.i))
    f = sigmoid(f)
    if use_lower_bound:
        lb = sigmoid(np.asarray(m.lower_bound[...], np.float64))
        f = lb + (1 - lb) * f
    q = q * sigmoid(q) / np.sqrt(8)
    S = np.zeros((2, 8, 8))
    outs = []
    for t in range(7):
        ft, kt, it = f[t].reshape(2, 8), 1 - f[t].reshape(2, 8), i[t].reshape(2, 8)
        S = ft[:, :, None] * S + kt[:, :, None] * it[:, None, :]
        outs.append(np.einsum("hk,hkv->hv", q[t].reshape(2, 8), S).reshape(-1))
    want = m.out(m.norm(jnp.asarray(np.stack(outs)[None], jnp.float32)))
    assert rel_err(m(x)[0], want) < 1e-5


def test_forget_gate_bounded_below():
    m = make(lower_bound_init=0.25)
    logits = jnp.array([[[-100.0] * 16, [0.0] * 16, [100.0] * 16]])
    f = np.exp(np.asarray(m.log_forget(logits)))[0]
    np.testing.assert_allclose(f[0], 0.25, rtol=1e-6)
    np.testing.assert_allclose(f[1], 0.25 + 0.75 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(f[2], 1.0, rtol=1e-6)
    unbounded = np.exp(np.asarray(make(use_lower_bound=False).log_forget(logits)))[0]
    assert unbounded[0].max() < 1e-40


def test_short_conv_path():
    """Decode == whole sequence, and packed documents do not leak, with the convs on."""
    m = make(use_short_conv=True)
    x = jax.random.normal(jax.random.key(2), (1, 11, BASE["d_model"]))
    run = jax.jit(lambda m, x, seg=None: m(x, segment_ids=seg)[0])
    step = jax.jit(lambda m, x, c: m(x, cache=c))
    y, cache = step(m, x[:, :6], m.init_cache(1, 11))
    ys = [y]
    for t in range(6, 11):
        y, cache = step(m, x[:, t : t + 1], cache)
        ys.append(y)
    assert rel_err(jnp.concatenate(ys, axis=1), run(m, x)) < 1e-5
    packed = run(m, x, jnp.array([[0] * 5 + [1] * 6]))
    assert rel_err(packed[:, 5:], run(m, x[:, 5:])) < 1e-5


@pytest.mark.parametrize(
    "options, field",
    [({"expand_ratio": 0}, "expand_ratio"), ({"lower_bound_init": 1.0}, "lower_bound_init")],
)
def test_bad_options(options, field):
    with pytest.raises(ValueError, match=f"hgrn2.*{field}"):
        make(**options)
