"""LongVQ specifics: the VQ-window softmax equals a direct softmax over quantised keys, the EMA is
MEGA's recurrence, the codebook path (a window shorter than the sequence) keeps the call contract,
and the straight-through estimator and commitment loss send gradients where they should."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linmix.models import ModelConfig
from linmix.models.mixers.longvq import LongVQ, vq_window_attention

nnx.set_graph_mode(False)

BASE = dict(vocab_size=64, d_model=32, num_layers=1, num_heads=2, mlp_ratio=0.0, chunk_size=8)
SMALL = {"window": 3, "codebook_size": 8}  # T > window: the codebook part is exercised


def make(options=None, **kw) -> LongVQ:
    cfg = ModelConfig(**{**BASE, "mixer": "longvq", "mixer_options": options or {}, **kw})
    return LongVQ(cfg, rngs=nnx.Rngs(0))


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def normal(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape)


def check_contract(m, d: int) -> jax.Array:
    """Causal by gradient, prefill + decode == whole sequence, no leak across packed segments
    (jitted: eager op-by-op dispatch is several times slower here). Returns the outputs."""
    fwd = jax.jit(lambda m, x, seg: m(x, segment_ids=seg)[0])
    x = normal(1, (2, 17, d))
    full = fwd(m, x, None)
    grad = jax.jit(jax.grad(lambda x, pos: jnp.take(fwd(m, x, None)[0], pos, axis=0).sum()))
    for pos in (0, 5, 16):
        g = grad(x, pos)
        assert jnp.all(g[0, pos + 1 :] == 0) and jnp.any(g[0, : pos + 1] != 0)
    step = jax.jit(lambda m, x, c: m(x, cache=c))
    y, cache = step(m, x[:, :6], m.init_cache(2, 17))
    ys = [y]
    for t in range(6, 17):
        y, cache = step(m, x[:, t : t + 1], cache)
        ys.append(y)
    assert rel_err(jnp.concatenate(ys, 1), full) < 1e-5
    seg = jnp.broadcast_to((jnp.arange(17) >= 7).astype(jnp.int32), (2, 17))
    packed = fwd(m, x, seg)
    assert rel_err(packed[:, :7], fwd(m, x[:, :7], None)) < 1e-5
    assert rel_err(packed[:, 7:], fwd(m, x[:, 7:], None)) < 1e-5
    return full


@pytest.mark.parametrize("packed", [False, True])
def test_vq_window_attention_is_softmax_over_quantised_keys(packed):
    """One softmax per query: logit q.c_z(s) + bias[t - s] for the last w keys, q.c_z(s) before."""
    b, t, h, kd, vd, w, n_code = 2, 13, 2, 4, 3, 4, 6
    q, v = normal(1, (b, t, h, kd)), normal(2, (b, t, h, vd))
    cb, bias = normal(3, (h, n_code, kd)), normal(4, (h, w))
    codes = jax.random.randint(jax.random.key(5), (b, t, h), 0, n_code)
    seg = jnp.broadcast_to((jnp.arange(t) >= 6).astype(jnp.int32), (b, t)) if packed else None
    seg_q = jnp.zeros((b, t), jnp.int32) if seg is None else seg
    pad = lambda x, fill: jnp.concatenate([jnp.full((b, w, *x.shape[2:]), fill, x.dtype), x], 1)  # noqa: E731
    attend = jax.jit(lambda *a: vq_window_attention(*a, state=None, segment_ids=seg, chunk=4)[0])
    o = attend(
        q, pad(cb[jnp.arange(h)[None, None], codes], 0), pad(codes, 0), pad(v, 0), seg_q,
        pad(seg_q, -1), cb, bias,
    )  # fmt: skip
    qn, vn, cbn, bn, cn, sn = map(np.asarray, (q, v, cb, bias, codes, seg_q))
    ref = np.zeros((b, t, h, vd))
    for i in range(b):
        for j in range(h):
            for tt in range(t):
                s = [x for x in range(tt + 1) if sn[i, x] == sn[i, tt]]
                logit = np.array([qn[i, tt, j] @ cbn[j, cn[i, x, j]] for x in s])
                logit += np.array([bn[j, tt - x] if tt - x < w else 0.0 for x in s])
                p = np.exp(logit - logit.max())
                ref[i, tt, j] = (p / p.sum()) @ vn[i, s, j]
    assert rel_err(o, ref) < 1e-5


def test_ema_is_megas_recurrence():
    """h_t = p beta x_t + (1 - p delta) h_{t-1}, y_t = gamma . h_t / sqrt(N), per channel."""
    m = make({"ema_dim": 3})
    x = normal(1, (1, 9, BASE["d_model"]))
    y = jax.jit(lambda m, x: m.ema(x)[0])(m, x)
    p = np.asarray(jax.nn.sigmoid(m.ema_alpha[...]))
    decay = 1 - p * np.asarray(jax.nn.sigmoid(m.ema_delta[...]))
    beta, gamma = np.asarray(m.ema_beta[...]), np.asarray(m.ema_gamma[...])
    hid, ref = np.zeros_like(p), []
    for t in range(9):
        hid = p * beta * np.asarray(x)[0, t][:, None] + decay * hid
        ref.append((gamma * hid).sum(-1) / np.sqrt(3))
    assert rel_err(y[0], np.stack(ref)) < 1e-5


def test_codebook_path_keeps_the_contract():
    """With window < T: causal by gradient, prefill + decode == whole sequence, no segment leak."""
    m = make(SMALL)
    check_contract(m, BASE["d_model"])


def test_straight_through_and_commitment_gradients():
    """Keys are only reached through argmin codes, so without the straight-through estimator the
    key affine (qk_gamma[1]) would get no gradient from the output; the commitment loss trains
    keys, never the codebook."""
    m = make(SMALL)
    x = normal(1, (1, 12, BASE["d_model"]))
    g = jax.jit(jax.grad(lambda m: jnp.square(m(x)[0]).sum()))(m)
    assert jnp.any(g.qk_gamma[...][1] != 0) and jnp.any(g.codebook[...] != 0)
    gc = jax.jit(jax.grad(lambda m: m.commitment_loss(x)))(m)
    assert jnp.all(gc.codebook[...] == 0) and jnp.any(gc.qk_gamma[...][1] != 0)
    k, loss = jax.jit(lambda m: (m.features(x)[1], m.commitment_loss(x)))(m)
    dist = jnp.sum(jnp.square(k[..., None, :] - m.codebook[...][None, None]), -1).min(-1)
    np.testing.assert_allclose(loss, dist.sum(-1).mean(), rtol=1e-5)


@pytest.mark.parametrize("field", ["window", "codebook_size", "ema_dim"])
def test_bad_options_name_the_field(field):
    with pytest.raises(ValueError, match=f"longvq.*{field}"):
        make({field: 0})
