"""BaseConv, the "C" layer: its output against the formula written out in numpy (taps reset at
segment boundaries), decoding from its cache, and its options checked by the model config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linmix.models import ModelConfig
from linmix.models.lm import LM
from linmix.models.mixers.base_conv import BaseConv

CFG = ModelConfig(vocab_size=32, d_model=8, num_layers=2, layer_pattern="CL", mixer="gla",
                  mlp_ratio=0.0, chunk_size=4)  # fmt: skip


def _by_formula(conv: BaseConv, x, seg):
    """y_t = (sum_j c_j x_{t-j}, same segment only) * (x_t W + b), loop by loop."""
    c, w, b = (np.asarray(a) for a in (conv.conv.kernel[...], conv.proj.kernel[...],
                                        conv.proj.bias[...]))  # fmt: skip
    x = np.asarray(x, np.float64)
    y = np.zeros_like(x)
    for i in range(x.shape[0]):
        for t in range(x.shape[1]):
            acc = np.zeros(x.shape[2])
            for j in range(c.shape[0]):
                if t - j >= 0 and seg[i, t - j] == seg[i, t]:
                    acc += c[j] * x[i, t - j]
            y[i, t] = acc * (x[i, t] @ w + b)
    return y


@pytest.mark.parametrize("size", [1, 3, 5])
def test_base_conv_equals_its_formula_with_segments(size):
    conv = BaseConv(CFG, rngs=nnx.Rngs(size), options={"conv_size": size})
    x = jax.random.normal(jax.random.key(0), (2, 11, 8))
    seg = np.array([[0] * 11, [0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3]], np.int32)
    got, cache = conv(x, segment_ids=jnp.asarray(seg))
    assert cache is None
    np.testing.assert_allclose(got, _by_formula(conv, x, seg), rtol=1e-5, atol=1e-5)
    whole, _ = conv(x)
    np.testing.assert_allclose(whole, _by_formula(conv, x, np.zeros((2, 11))), rtol=1e-5,
                               atol=1e-5)  # fmt: skip


def test_base_conv_decodes_from_its_cache():
    conv = BaseConv(CFG, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 9, 8))
    full, _ = conv(x)
    cache = conv.init_cache(2, 16)
    parts = []
    for start, stop in ((0, 4), (4, 5), (5, 6), (6, 9)):
        y, cache = conv(x[:, start:stop], cache=cache)
        parts.append(y)
    np.testing.assert_allclose(jnp.concatenate(parts, 1), full, rtol=1e-5, atol=1e-6)


def test_conv_then_mixer_lm_builds_one_conv_and_one_mixer_block():
    model = LM(CFG, rngs=nnx.Rngs(0))
    kinds = [type(block.mixer).__name__ for block in model.units.blocks]
    assert kinds == ["BaseConv", "GLA"]
    assert model(jnp.ones((2, 6), jnp.int32)).shape == (2, 6, 32)


@pytest.mark.parametrize(
    "options, match",
    [({"kernel": 3}, "unknown option"), ({"conv_size": 0}, "conv_size must be >= 1")],
)
def test_bad_conv_options_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{**CFG.__dict__, "conv_options": options})
