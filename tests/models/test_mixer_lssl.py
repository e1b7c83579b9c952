"""LSSL (diagonal): the chunked form equals the recurrence oracle of `linmix.ops.ssm` for every
initialisation and discretisation, restarts exactly at packed-document boundaries, continues from
a state, and equals the FFT form; the LegS diagonal is the spectrum of HiPPO-LegS's normal part."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linmix.models import REGISTRY, ModelConfig
from linmix.models.mixers import lssl
from linmix.models.mixers.lssl import init_modes
from linmix.ops import ssm

nnx.set_graph_mode(False)

BASE = dict(vocab_size=64, d_model=8, num_layers=1, num_heads=2, mlp_ratio=0.0, chunk_size=4)
H, N = 3, 5
# One compilation per shape instead of op-by-op dispatch keeps the tests fast.
lti_chunked = jax.jit(lssl.lti_chunked, static_argnums=(5, 6))
ssm_conv_reference = jax.jit(ssm.ssm_conv_reference, static_argnames="discretization")
run = jax.jit(lambda m, x: m(x)[0])


def make(**options):
    cfg = ModelConfig(**{**BASE, "mixer": "lssl", "mixer_options": {"state_size": 6, **options}})
    return REGISTRY["lssl"](cfg, rngs=nnx.Rngs(0))


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def params(init):
    a, b = init_modes(init, N)
    A = jnp.asarray(np.broadcast_to(a, (H, N)), jnp.complex64)
    B = jnp.asarray(np.broadcast_to(b, (H, N)), jnp.complex64)
    c = jax.random.normal(jax.random.key(7), (2, H, N))
    C = jax.lax.complex(c[0], c[1])
    log_dt = jnp.log(jnp.array([1e-3, 3e-2, 0.3]))
    if init == "real":
        A, B, C = A.real, B.real, C.real
    return log_dt, A, B, C


@pytest.mark.parametrize("disc", ["bilinear", "zoh"])
@pytest.mark.parametrize("init", ["legs", "lin", "real"])
def test_chunked_equals_recurrence(init, disc):
    log_dt, A, B, C = params(init)
    u = jax.random.normal(jax.random.key(1), (2, 13, H))
    y, _ = lti_chunked(u, log_dt, A, B, C, disc, 4)
    want = ssm_conv_reference(u, log_dt, A, B, C, discretization=disc)
    assert rel_err(y, want) < 1e-5


def test_packed_documents_restart_exactly():
    """Documents shorter than, inside, and across chunks each get the outputs they get alone."""
    log_dt, A, B, C = params("legs")
    lengths = [3, 1, 9, 2, 6]
    u = jax.random.normal(jax.random.key(2), (1, sum(lengths), H))
    seg = jnp.asarray(np.repeat(np.arange(5), lengths)[None], jnp.int32)
    y, _ = lti_chunked(u, log_dt, A, B, C, "bilinear", 4, seg_BT=seg)
    edges = np.cumsum([0, *lengths])
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        want = ssm_conv_reference(u[:, lo:hi], log_dt, A, B, C, discretization="bilinear")
        assert rel_err(y[:, lo:hi], want) < 1e-5


def test_continues_from_a_state():
    log_dt, A, B, C = params("lin")
    u = jax.random.normal(jax.random.key(3), (2, 17, H))
    y_all, x_all = lti_chunked(u, log_dt, A, B, C, "zoh", 4)
    y_a, x_a = lti_chunked(u[:, :6], log_dt, A, B, C, "zoh", 4)
    y_b, x_b = lti_chunked(u[:, 6:], log_dt, A, B, C, "zoh", 4, x0_BHN=x_a)
    assert rel_err(jnp.concatenate([y_a, y_b], axis=1), y_all) < 1e-5
    # The final state is the recurrence's, from x_0 = 0.
    a = np.exp(np.exp(np.asarray(log_dt, np.float64))[:, None] * np.asarray(A))
    bbar = (a - 1) / np.asarray(A) * np.asarray(B)
    x = np.zeros((2, H, N), complex)
    for t in range(17):
        x = a * x + bbar * np.asarray(u, np.float64)[:, t, :, None]
    for got in (x_b, x_all):
        assert np.linalg.norm(np.asarray(got) - x) / np.linalg.norm(x) < 1e-5


def test_fft_form_equals_chunked_form():
    x = jax.random.normal(jax.random.key(4), (2, 21, BASE["d_model"]))
    y_chunked, y_fft = run(make(), x), run(make(form="fft"), x)
    assert rel_err(y_fft, y_chunked) < 1e-5


def test_legs_modes_are_the_normal_hippo_spectrum():
    a, b = init_modes("legs", 4)
    q = np.arange(8)
    r = np.sqrt(2 * q + 1)
    legs = -(np.tril(np.outer(r, r), -1) + np.diag(q + 1))  # HiPPO-LegS A
    normal = legs + np.outer(np.sqrt(q + 0.5), np.sqrt(q + 0.5))  # + rank-1 correction P P^T
    eig = np.linalg.eigvals(normal)
    np.testing.assert_allclose(np.sort(a.imag), np.sort(eig.imag)[:4], atol=1e-8)
    np.testing.assert_allclose(a.real, -0.5)
    assert np.abs(b).min() > 0


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="lssl.*init"):
        make(init="legt")
    with pytest.raises(ValueError, match="lssl.*form"):
        make(form="fourier")
