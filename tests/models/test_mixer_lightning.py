"""Lightning / TNL attention: ALiBi slopes, and the layer against its dense closed form
O = (Q K^T * Λ) V with Λ_ts = exp(-s_h (t - s)) for s <= t, then Norm * sigmoid(low-rank gate)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linmix.models import REGISTRY, ModelConfig
from linmix.models.mixers.lightning import alibi_slopes

nnx.set_graph_mode(False)

BASE = dict(vocab_size=64, d_model=16, num_layers=1, num_heads=2, mlp_ratio=0.0, chunk_size=4)


def make(**options):
    cfg = ModelConfig(**{**BASE, "mixer": "lightning", "mixer_options": options})
    return REGISTRY["lightning"](cfg, rngs=nnx.Rngs(0))


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_alibi_slopes():
    np.testing.assert_allclose(alibi_slopes(8), 2.0 ** -np.arange(1, 9))
    np.testing.assert_allclose(alibi_slopes(2), [2.0**-4, 2.0**-8])
    # 6 heads: the 4-head series, then every other slope of the 8-head series.
    np.testing.assert_allclose(alibi_slopes(6), 2.0 ** -np.array([2, 4, 6, 8, 1, 3]))


@pytest.mark.parametrize("slope_scale", [1.0, 0.5])
def test_closed_form(slope_scale):
    m = make(slope_scale=slope_scale)
    x = jax.random.normal(jax.random.key(1), (2, 10, BASE["d_model"]))
    q, k, v = (
        np.asarray(jax.nn.silu(p(x))).reshape(2, 10, 2, -1) for p in (m.qkv.q, m.qkv.k, m.qkv.v)
    )
    s = np.asarray(alibi_slopes(2)) * slope_scale
    t = np.arange(10)
    gap = (t[:, None] - t[None, :]).astype(np.float64)
    decay = np.where(gap >= 0, np.exp(-s[:, None, None] * np.maximum(gap, 0)), 0.0)  # [H, T, S]
    w = np.einsum("bthd,bshd->bhts", q, k) * decay[None]
    o = np.einsum("bhts,bshd->bthd", w, v).reshape(2, 10, -1)
    gate = jax.nn.sigmoid(m.gate_up(m.gate_down(x)))
    want = m.out(m.norm(jnp.asarray(o, jnp.float32)) * gate)
    assert rel_err(m(x)[0], want) < 1e-5


def test_variant_with_conv_and_srmsnorm_decodes():
    m = make(use_short_conv=True, norm="srmsnorm", slope_scale=0.0)
    x = jax.random.normal(jax.random.key(2), (1, 9, BASE["d_model"]))
    full, _ = m(x)
    step = jax.jit(lambda m, x, c: m(x, cache=c))
    y, cache = step(m, x[:, :5], m.init_cache(1, 9))
    ys = [y]
    for t in range(5, 9):
        y, cache = step(m, x[:, t : t + 1], cache)
        ys.append(y)
    assert rel_err(jnp.concatenate(ys, axis=1), full) < 1e-5


@pytest.mark.parametrize(
    "options, field",
    [({"slope_scale": -1.0}, "slope_scale"), ({"norm": "batchnorm"}, "norm")],
)
def test_bad_options(options, field):
    with pytest.raises(ValueError, match=f"lightning.*{field}"):
        make(**options)
