"""GLA and RetNet against their papers' equations, written out token by token in numpy from the
modules' own parameters: the gate (GLA: alpha_t = sigmoid(x W_1 W_2 + b)^(1/16) per key channel;
RetNet: gamma_h = 1 - 2^(-5-h), rotary q and k), the K^-1/2 scale, and the output (per-head
RMSNorm, times swish(x W_g), then W_o)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from linmix.models import ModelConfig
from linmix.models.layers import rotary
from linmix.models.mixers import REGISTRY

B, T, D, H = 2, 13, 16, 2


def _w(linear) -> np.ndarray:
    return np.asarray(linear.kernel[...], np.float64)


def _swish(z):
    return z / (1.0 + np.exp(-z))


def _output(mixer, o_BTHV, x_BTD):
    """Per-head RMSNorm (eps 1e-6, learned scale), times swish(x W_g), then W_o."""
    out = mixer.output
    norm = o_BTHV / np.sqrt((o_BTHV**2).mean(-1, keepdims=True) + 1e-6)
    y = (norm * np.asarray(out.norm.scale[...])).reshape(B, T, -1)
    if out.gate is not None:
        y = y * _swish(x_BTD @ _w(out.gate))
    return y @ _w(out.out)


def _recurrence(q, k, v, decay_BTHK):
    """S_t = diag(decay_t) S_{t-1} + k_t^T v_t; o_t = q_t S_t K^-1/2, per batch row and head."""
    o = np.zeros(v.shape)
    for b in range(B):
        for h in range(H):
            s = np.zeros((k.shape[-1], v.shape[-1]))
            for t in range(T):
                s = decay_BTHK[b, t, h][:, None] * s + np.outer(k[b, t, h], v[b, t, h])
                o[b, t, h] = q[b, t, h] @ s / np.sqrt(k.shape[-1])
    return o


def _mixer(name, gate):
    cfg = ModelConfig(vocab_size=8, d_model=D, num_heads=H, mixer=name, chunk_size=4,
                      mixer_options={"use_output_gate": gate})  # fmt: skip
    return REGISTRY[name](cfg, rngs=nnx.Rngs(3))


def _qkv(mixer, x):
    heads = lambda y: y.reshape(B, T, H, -1)  # noqa: E731
    return [heads(x @ _w(p)) for p in (mixer.qkv.q, mixer.qkv.k, mixer.qkv.v)]


@pytest.mark.parametrize("gate", [True, False])
def test_gla_follows_its_paper(gate):
    mixer = _mixer("gla", gate)
    x = np.asarray(jax.random.normal(jax.random.key(0), (B, T, D)), np.float64)
    q, k, v = _qkv(mixer, x)
    logit = x @ _w(mixer.gate_down) @ _w(mixer.gate_up) + np.asarray(mixer.gate_up.bias[...])
    alpha = (1.0 / (1.0 + np.exp(-logit))) ** (1.0 / 16.0)  # the paper's sigmoid^(1/tau)
    want = _output(mixer, _recurrence(q, k, v, alpha.reshape(B, T, H, -1)), x)
    got, _ = mixer(x.astype(np.float32))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("gate", [True, False])
def test_retnet_follows_its_paper(gate):
    mixer = _mixer("retnet", gate)
    x = np.asarray(jax.random.normal(jax.random.key(1), (B, T, D)), np.float64)
    q, k, v = _qkv(mixer, x)
    pos = np.broadcast_to(np.arange(T), (B, T))
    q, k = (np.asarray(rotary(y.astype(np.float32), pos), np.float64) for y in (q, k))
    gamma = 1.0 - 2.0 ** (-5.0 - np.arange(H))  # head h: 1 - 2^(-5-h)
    decay = np.broadcast_to(gamma[None, None, :, None], (B, T, H, k.shape[-1]))
    want = _output(mixer, _recurrence(q, k, v, decay), x)
    got, _ = mixer(x.astype(np.float32))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
