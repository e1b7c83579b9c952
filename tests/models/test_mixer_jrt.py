"""JRT-RNN prefix linear attention: paper Eq. 3 written out in float64 numpy; the prefix rule of
causality by gradient (prefix tokens see the whole prefix, later tokens are causal); decoding
after a prefill that covers the prefix; a shorter first call encodes only itself; packed
documents each read their own prefix; option errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linmix.models import REGISTRY, ModelConfig

nnx.set_graph_mode(False)

BASE = dict(vocab_size=64, d_model=32, num_layers=1, num_heads=2, mlp_ratio=0.0, chunk_size=8)
D, H = BASE["d_model"], BASE["num_heads"]


def make(**options):
    cfg = ModelConfig(**BASE, mixer="jrt", mixer_options=options)
    return REGISTRY["jrt"](cfg, rngs=nnx.Rngs(0))


def inputs(shape, seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def taylor(x):
    """[1, x / d^(1/4), vec(x x^T) / (sqrt(2) sqrt(d))] in float64."""
    d = x.shape[-1]
    outer = (x[..., :, None] * x[..., None, :]).reshape(*x.shape[:-1], d * d)
    return np.concatenate([np.ones_like(x[..., :1]), x / d**0.25, outer / np.sqrt(2 * d)], -1)


def heads(y):
    return np.asarray(y, np.float64).reshape(*y.shape[:2], H, -1)


def call(mixer, x, **kw):
    return jax.jit(lambda m, x: m(x, **kw)[0])(mixer, x)


@pytest.mark.parametrize("prefix", [0, 5, 30])
def test_matches_paper_eq3(prefix):
    """y_i = phi(q_i) (sum_{j<=i} phi(kd_j)^T vd_j + sum_{j<M} phi(ke_j)^T ve_j) / (same with 1)."""
    mixer = make(prefix_len=prefix)
    x = inputs((2, 12, D))
    q, kd, vd = (heads(p(x)) for p in (mixer.qkv.q, mixer.qkv.k, mixer.qkv.v))
    fq, fkd = taylor(q), taylor(kd)
    T = x.shape[1]
    w = np.einsum("bihf,bjhf->bhij", fq, fkd) * np.tril(np.ones((T, T)))
    num, den = np.einsum("bhij,bjhv->bihv", w, vd), w.sum(-1).transpose(0, 2, 1)
    if prefix:
        ke, ve = (heads(p(x))[:, :prefix] for p in mixer.encoder)  # M > T: the whole sequence
        we = np.einsum("bihf,bjhf->bhij", fq, taylor(ke))
        num = num + np.einsum("bhij,bjhv->bihv", we, ve)
        den = den + we.sum(-1).transpose(0, 2, 1)
    y = (num / den[..., None]).reshape(2, T, -1)
    assert rel_err(call(mixer, x), mixer.out(jnp.asarray(y, jnp.float32))) < 1e-5


@pytest.mark.parametrize("conv", [False, True])
def test_prefix_rule_by_gradient(conv):
    """Outputs inside the prefix depend on every prefix token and nothing after it; outputs after
    the prefix have exactly zero gradient from their future."""
    m = 6
    mixer = make(prefix_len=m, use_short_conv=conv)
    x = inputs((1, 15, D))
    grad = jax.jit(jax.grad(lambda x, pos: mixer(x)[0][0, pos].sum()))
    for pos in (0, 3, 5, 6, 9, 14):
        seen = np.asarray(jnp.any(grad(x, pos)[0] != 0, axis=-1))  # [T]: x_s reaches y_pos
        horizon = max(pos, m - 1)
        assert seen[: horizon + 1].all(), f"output {pos} ignores part of its visible range"
        assert not seen[horizon + 1 :].any(), f"output {pos} depends on tokens past {horizon}"


@pytest.mark.parametrize("first", [6, 9])
def test_decode_after_a_prefill_covering_the_prefix(first):
    mixer = make(prefix_len=6, use_short_conv=True)
    x = inputs((2, 14, D), seed=2)
    step = jax.jit(lambda m, x, c: m(x, cache=c))
    y, cache = step(mixer, x[:, :first], mixer.init_cache(2, 14))
    ys = [y]
    for t in range(first, 14):
        y, cache = step(mixer, x[:, t : t + 1], cache)
        ys.append(y)
    assert int(cache["pos"]) == 14
    assert rel_err(jnp.concatenate(ys, axis=1), call(mixer, x)) < 1e-5


def test_a_first_call_shorter_than_the_prefix_encodes_only_itself():
    """As the official layer: the encoder sees min(M, T) tokens of the first call."""
    x = inputs((2, 10, D), seed=3)
    step = jax.jit(lambda m, x, c: m(x, cache=c))
    long = make(prefix_len=8)
    y, cache = step(long, x[:, :4], long.init_cache(2, 10))
    ys = [y]
    for t in range(4, 10):
        y, cache = step(long, x[:, t : t + 1], cache)
        ys.append(y)
    short = make(prefix_len=4)  # the same parameters (same seed and shapes)
    assert rel_err(jnp.concatenate(ys, axis=1), call(short, x)) < 1e-5


@pytest.mark.parametrize("conv", [False, True])
def test_packed_documents_read_their_own_prefix(conv):
    mixer = make(prefix_len=4, use_short_conv=conv)
    a, b = inputs((1, 9, D), 4), inputs((1, 12, D), 5)
    seg = jnp.concatenate([jnp.zeros((1, 9), jnp.int32), jnp.ones((1, 12), jnp.int32)], axis=1)
    packed = call(mixer, jnp.concatenate([a, b], axis=1), segment_ids=seg)
    assert rel_err(packed[:, :9], call(mixer, a)) < 1e-5
    assert rel_err(packed[:, 9:], call(mixer, b)) < 1e-5


def test_causal_default_has_no_encoder():
    assert make().encoder is None and make(prefix_len=3).encoder is not None


@pytest.mark.parametrize(
    "options, field", [(dict(prefix_len=-1), "prefix_len"), (dict(feature_dim=0), "feature_dim")]
)
def test_bad_options_raise(options, field):
    with pytest.raises(ValueError, match=f"mixer 'jrt'.*{field}"):
        ModelConfig(**BASE, mixer="jrt", mixer_options=options)
