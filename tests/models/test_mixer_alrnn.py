"""AL-RNN against its per-token definition z_t = A z_{t-1} + W Phi*(z_{t-1}) + h + u_t with only
the last P latents rectified, restarted per document; and the official initialisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linmix.models import REGISTRY, ModelConfig

nnx.set_graph_mode(False)

BASE = dict(vocab_size=64, d_model=16, num_layers=1, num_heads=2, mlp_ratio=0.0, chunk_size=4)


run = jax.jit(lambda m, x, seg: m(x, segment_ids=seg)[0])  # one compilation: fast


def make(**options):
    cfg = ModelConfig(**{**BASE, "mixer": "alrnn", "mixer_options": options})
    return REGISTRY["alrnn"](cfg, rngs=nnx.Rngs(0))


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("pwl_units", [0, 3, 6])
def test_recurrence_per_document(pwl_units):
    m = make(latent_dim=6, pwl_units=pwl_units)
    # Strong couplings and a bias so that rectified units switch on and off along the way.
    m.W[...] = 0.4 * jax.random.normal(jax.random.key(3), (2, 6, 6))
    m.h[...] = 0.3 * jax.random.normal(jax.random.key(4), (2, 6))
    x = jax.random.normal(jax.random.key(1), (1, 9, BASE["d_model"]))
    seg = np.array([0] * 5 + [1] * 4)
    A, W, h = (np.asarray(p[...], np.float64) for p in (m.A, m.W, m.h))
    u = np.asarray(m.in_proj(x), np.float64)[0].reshape(9, 2, 6)
    z, zs = np.zeros((2, 6)), []
    for t in range(9):
        if t and seg[t] != seg[t - 1]:
            z = np.zeros((2, 6))
        phi = z.copy()
        phi[:, 6 - pwl_units :] = np.maximum(phi[:, 6 - pwl_units :], 0)
        z = A * z + np.einsum("hij,hj->hi", W, phi) + h + u[t]
        zs.append(z.reshape(-1))
    zs = np.stack(zs)
    if pwl_units:  # the rectification mattered: some rectified latent went negative
        assert (zs.reshape(9, 2, 6)[:, :, 6 - pwl_units :] < 0).any()
    want = m.out_proj(jnp.asarray(zs[None], jnp.float32))
    y = run(m, x, jnp.asarray(seg[None], jnp.int32))
    assert rel_err(y, want) < 1e-5


def test_initialisation_as_official():
    m = make()
    A, W, h = np.asarray(m.A[...]), np.asarray(m.W[...]), np.asarray(m.h[...])
    assert A.shape == (2, 20) and W.shape == (2, 20, 20) and m.pwl_units == 2
    assert (A > 0).all() and (A <= 1).all()  # diag(K) / lambda_max(K), K positive definite
    assert 0.005 < W.std() < 0.02 and (h == 0).all()


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="alrnn.*pwl_units"):
        make(latent_dim=4, pwl_units=5)
