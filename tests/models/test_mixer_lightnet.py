"""LightNet against its closed form: each key channel is a softmax over time of the values,
S_t[i] = sum_{s<=t} e^{k_si} v_s / sum_{s<=t} e^{k_si}, restarted per document, stable for large
key logits; and the running log-sum-exp with restarts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linmix.models import REGISTRY, ModelConfig
from linmix.models.mixers.lightnet import running_logsumexp

nnx.set_graph_mode(False)

BASE = dict(vocab_size=64, d_model=16, num_layers=1, num_heads=2, mlp_ratio=0.0, chunk_size=4)


# One compilation instead of op-by-op dispatch keeps the tests fast.
run = jax.jit(lambda m, x, seg: m(x, segment_ids=seg)[0])


def make(**options):
    cfg = ModelConfig(**{**BASE, "mixer": "lightnet", "mixer_options": options})
    return REGISTRY["lightnet"](cfg, rngs=nnx.Rngs(0))


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def closed_form(m, x, seg):
    """The mixer output with o_t = SiLU(q_t) . (per-channel softmax over the document's past)."""
    q, k, v = (np.asarray(p(x), np.float64)[0] for p in (m.q, m.k, m.v))
    t_len, h = x.shape[1], m.num_heads
    q = (q / (1 + np.exp(-q))).reshape(t_len, h, -1)
    k, v = k.reshape(t_len, h, -1), v.reshape(t_len, h, -1)
    outs = np.zeros((t_len, h, v.shape[-1]))
    for t in range(t_len):
        past = [s for s in range(t + 1) if seg[s] == seg[t]]
        w = np.exp(k[past] - k[past].max(axis=0))  # [S, H, K], stable softmax over s
        w = w / w.sum(axis=0)
        S = np.einsum("shk,shv->hkv", w, v[past])
        outs[t] = np.einsum("hk,hkv->hv", q[t], S)
    o = jnp.asarray(outs.reshape(1, t_len, -1), jnp.float32)
    return m.out(m.norm(o) * jax.nn.silu(m.gate_up(m.gate_down(x))))


@pytest.mark.parametrize("key_scale", [1.0, 40.0])
def test_softmax_over_time_per_document(key_scale):
    m = make()
    m.k.kernel[...] = m.k.kernel[...] * key_scale  # logits of order +-100: no overflow
    x = jax.random.normal(jax.random.key(1), (1, 11, BASE["d_model"]))
    seg = np.array([0] * 4 + [1] * 1 + [2] * 6)
    y = run(m, x, jnp.asarray(seg[None], jnp.int32))
    assert jnp.all(jnp.isfinite(y))
    assert rel_err(y, closed_form(m, x, seg)) < 1e-5
    y_one = run(m, x, None)
    assert rel_err(y_one, closed_form(m, x, np.zeros(11, int))) < 1e-5


def test_running_logsumexp_restarts_and_continues():
    k = jax.random.normal(jax.random.key(2), (1, 7, 1, 3)) * 5
    start = jnp.array([[False, False, True, False, False, True, False]])
    z, z_prev = running_logsumexp(k, start, None)
    kn = np.asarray(k, np.float64)[0, :, 0]
    for t, s0 in zip(range(7), [0, 0, 2, 2, 2, 5, 5], strict=True):
        want = np.log(np.exp(kn[s0 : t + 1]).sum(axis=0))
        np.testing.assert_allclose(z[0, t, 0], want, rtol=1e-5)
        prev = -np.inf if t == s0 else np.log(np.exp(kn[s0:t]).sum(axis=0))
        np.testing.assert_allclose(z_prev[0, t, 0], prev, rtol=1e-5)
    # Continuing from a cached normaliser z0 equals running over the joined sequence.
    z_a, _ = running_logsumexp(k[:, :3], None, None)
    z_b, z_b_prev = running_logsumexp(k[:, 3:], None, z_a[:, -1])
    z_all, z_all_prev = running_logsumexp(k, None, None)
    np.testing.assert_allclose(z_b, z_all[:, 3:], rtol=1e-6)
    np.testing.assert_allclose(z_b_prev, z_all_prev[:, 3:], rtol=1e-6)
