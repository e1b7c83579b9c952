"""Layer tests: positions restart per segment, rotary is a relative encoding, short conv."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from linmix.models.layers import ShortConv, positions, rotary


def test_positions_restart_at_segment_starts():
    seg = jnp.array([[0, 0, 0, 1, 1, 2, 2, 2, 2]])
    np.testing.assert_array_equal(positions(seg, 1, 9), [[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    np.testing.assert_array_equal(positions(None, 2, 3), [[0, 1, 2], [0, 1, 2]])


def test_rotary_scores_depend_only_on_offset():
    q = jax.random.normal(jax.random.key(0), (1, 1, 1, 8))
    k = jax.random.normal(jax.random.key(1), (1, 1, 1, 8))

    def score(tq, tk):
        rq = rotary(q, jnp.array([[tq]]))
        rk = rotary(k, jnp.array([[tk]]))
        return float((rq * rk).sum())

    np.testing.assert_allclose(score(5, 2), score(13, 10), rtol=1e-5)
    assert abs(score(5, 2) - score(5, 4)) > 1e-4


def test_short_conv_is_causal_and_segment_local():
    conv = ShortConv(3, 4, rngs=nnx.Rngs(0), dtype=jnp.float32)
    x = jax.random.normal(jax.random.key(2), (1, 10, 3))
    seg = jnp.array([[0] * 6 + [1] * 4])
    y = conv(x, seg)
    # Direct definition: y_t = sum_j w_j x_{t-j} over same-segment, non-negative t-j.
    w = conv.kernel[...]
    expect = np.zeros_like(np.asarray(x))
    for t in range(10):
        for j in range(4):
            if t - j >= 0 and seg[0, t - j] == seg[0, t]:
                expect[0, t] += np.asarray(w[j]) * np.asarray(x[0, t - j])
    np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-6)
