"""TransNormer: NormAttention and DiagAttention against dense closed forms; DiagAttention's block
cache across block boundaries and its packed-segment blocks (the generic tests run NormAttention
only, and with one block)."""

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
    cfg = ModelConfig(**{**BASE, "mixer": "transnormer", "mixer_options": options})
    return REGISTRY["transnormer"](cfg, rngs=nnx.Rngs(0))


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def x_of(t, seed=1, b=2):
    return jax.random.normal(jax.random.key(seed), (b, t, BASE["d_model"]))


def srms(x):
    return x / (np.sqrt(np.mean(x**2, axis=-1, keepdims=True)) + 1e-8)


def projections(m, x):
    b, t, _ = x.shape
    q, k, v = (np.asarray(p(x)).reshape(b, t, 2, -1) for p in (m.qkv.q, m.qkv.k, m.qkv.v))
    return q, k, v


@pytest.mark.parametrize("feature_map", ["elu1", "elu"])
def test_norm_attention_closed_form(feature_map):
    """y = SRMSNorm(concat_h (phi(Q) phi(K)^T * M) V) W_o: no denominator, no 1/sqrt(d)."""
    m, x = make(feature_map=feature_map), x_of(9)
    q, k, v = projections(m, x)
    phi = (lambda z: np.where(z > 0, z + 1, np.exp(z))) if feature_map == "elu1" else jax.nn.elu
    w = np.einsum("bthd,bshd->bhts", phi(q), phi(k)) * np.tril(np.ones((9, 9)))
    o = np.einsum("bhts,bshd->bthd", w, v).reshape(2, 9, -1)
    assert rel_err(m(x)[0], m.out(jnp.asarray(srms(o), jnp.float32))) < 1e-5


@pytest.mark.parametrize("activation", ["softmax", "relu"])
def test_diag_attention_closed_form(activation):
    """Dense T x T attention masked to s <= t in the same block of 4 (ReLA: then SRMSNorm)."""
    m, x = make(attention="diag", block_size=4, diag_activation=activation), x_of(11)
    q, k, v = projections(m, x)
    logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
    t = np.arange(11)
    mask = (t[:, None] // 4 == t[None, :] // 4) & (t[None, :] <= t[:, None])
    if activation == "softmax":
        logits = np.where(mask, logits, -np.inf)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p = p / p.sum(-1, keepdims=True)
    else:
        p = np.where(mask, np.maximum(logits, 0), 0)
    o = np.einsum("bhts,bshd->bthd", p, v).reshape(2, 11, -1)
    o = srms(o) if activation == "relu" else o
    assert rel_err(m(x)[0], m.out(jnp.asarray(o, jnp.float32))) < 1e-5


@pytest.mark.parametrize("activation", ["softmax", "relu"])
def test_diag_cache_across_blocks(activation):
    """Prefills from mid-block across a boundary, ending on one and off one, and single steps
    (blocks of 4): the whole-sequence output; the cache holds only one block."""
    m, x = make(attention="diag", block_size=4, diag_activation=activation), x_of(19)
    full, _ = m(x)
    step = jax.jit(lambda m, x, c: m(x, cache=c))
    cache = m.init_cache(2, 19)
    assert cache["k"].shape[1] == 4
    ys = []
    for lo, hi in [(0, 3), (3, 8), (8, 13)] + [(t, t + 1) for t in range(13, 19)]:
        y, cache = step(m, x[:, lo:hi], cache)
        ys.append(y)
    assert int(cache["pos"]) == 19
    assert rel_err(jnp.concatenate(ys, axis=1), full) < 1e-5


def test_diag_causal_and_packed_documents_start_their_own_blocks():
    m = make(attention="diag", block_size=4, use_short_conv=True)
    a, b = x_of(6, 2, b=1), x_of(9, 3, b=1)
    seg = jnp.array([[0] * 6 + [1] * 9])
    run = jax.jit(lambda m, x, seg=None: m(x, segment_ids=seg)[0])
    packed = run(m, jnp.concatenate([a, b], axis=1), seg)
    assert rel_err(packed[:, :6], run(m, a)) < 1e-5
    assert rel_err(packed[:, 6:], run(m, b)) < 1e-5
    x = x_of(10, b=1)
    grad = jax.jit(jax.grad(lambda x, m, pos: m(x)[0][0, pos].sum()))
    for pos in (3, 4, 9):
        g = grad(x, m, pos)
        assert jnp.all(g[0, pos + 1 :] == 0)
        # Blocks of 4 (conv width 4 reaches 3 tokens back): nothing before the block's conv reach.
        first = pos // 4 * 4
        assert jnp.all(g[0, : max(first - 3, 0)] == 0) and jnp.any(g[0, first : pos + 1] != 0)


@pytest.mark.parametrize(
    "options, field",
    [
        ({"attention": "both"}, "attention"),
        ({"feature_map": "relu"}, "feature_map"),
        ({"diag_activation": "gelu"}, "diag_activation"),
        ({"block_size": 0}, "block_size"),
    ],
)
def test_bad_options(options, field):
    with pytest.raises(ValueError, match=f"transnormer.*{field}"):
        make(**options)
