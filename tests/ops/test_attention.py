"""Softmax attention: XLA path vs the explicit fp32 oracle, masking semantics and validation."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linmix.ops.attention import attention, attention_decode
from linmix.testing.numerics import rel_err

B, T, D = 2, 24, 8
TOL = 1e-4


@functools.cache
def _noise(seed: int) -> np.ndarray:
    """Standard normals from a fixed jax.random key, cut into tensors on the host (one sampler
    compile instead of one per shape)."""
    return np.asarray(jax.random.normal(jax.random.key(seed), (4, 1 << 12)))


def normal(slot: int, shape: tuple[int, ...], seed: int = 0) -> jax.Array:
    return jnp.asarray(_noise(seed)[slot, : int(np.prod(shape))].reshape(shape))


SEGMENT_IDS = jnp.asarray(np.repeat([[0, 1, 2, 3], [0, 0, 1, 2]], [5, 8, 3, 8], axis=1))


@functools.partial(jax.jit, static_argnames=("implementation", "causal"))
def run_with_grads(q, k, v, segment_ids, cotangent, *, implementation, causal):
    def f(q, k, v):
        return attention(
            q, k, v, segment_ids=segment_ids, causal=causal, implementation=implementation
        )

    o, vjp = jax.vjp(f, q, k, v)
    return o, vjp(cotangent)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.parametrize(("H", "Hkv", "Dv"), [(2, 2, 8), (4, 2, 8), (4, 1, 12)])
def test_xla_matches_reference(causal: bool, segmented: bool, H: int, Hkv: int, Dv: int) -> None:
    q = normal(0, (B, T, H, D))
    k = normal(1, (B, T, Hkv, D))
    v = normal(2, (B, T, Hkv, Dv))
    cotangent = normal(3, (B, T, H, Dv))
    segment_ids = SEGMENT_IDS if segmented else None
    kwargs = dict(causal=causal)
    got = run_with_grads(q, k, v, segment_ids, cotangent, implementation="xla", **kwargs)
    want = run_with_grads(q, k, v, segment_ids, cotangent, implementation="reference", **kwargs)
    assert rel_err(got[0], want[0]) < TOL
    for name, a, b in zip("qkv", got[1], want[1], strict=True):
        assert np.isfinite(np.asarray(a)).all(), name
        assert rel_err(a, b) < TOL, (name, rel_err(a, b))


@pytest.mark.parametrize("implementation", ["xla", "reference"])
def test_single_token_causal_returns_value(implementation: str) -> None:
    q = normal(0, (B, 1, 4, D))
    k = normal(1, (B, 1, 2, D))
    v = normal(2, (B, 1, 2, 6))
    o = attention(q, k, v, implementation=implementation)
    # Query head h reads kv head h // 2.
    np.testing.assert_allclose(o, jnp.repeat(v, 2, axis=2), rtol=1e-6)


@pytest.mark.parametrize("implementation", ["xla", "reference"])
def test_segments_do_not_interact(implementation: str) -> None:
    """Changing tokens of one segment leaves the outputs of every other segment unchanged."""
    q, k, v = (normal(i, (B, T, 2, D)) for i in range(3))
    o = attention(q, k, v, segment_ids=SEGMENT_IDS, causal=False, implementation=implementation)
    in_seg1 = (SEGMENT_IDS == 1)[:, :, None, None]
    v2 = jnp.where(in_seg1, 10.0 * v, v)
    k2 = jnp.where(in_seg1, -k, k)
    o2 = attention(q, k2, v2, segment_ids=SEGMENT_IDS, causal=False, implementation=implementation)
    np.testing.assert_allclose(jnp.where(in_seg1, 0.0, o2), jnp.where(in_seg1, 0.0, o), rtol=1e-6)
    assert not np.allclose(jnp.where(in_seg1, o2, 0.0), jnp.where(in_seg1, o, 0.0))


def test_bf16_output_dtype_and_accuracy() -> None:
    q, k, v = (normal(i, (B, T, 2, D)) for i in range(3))
    o = attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), segment_ids=SEGMENT_IDS)
    assert o.dtype == jnp.bfloat16
    want = attention(q, k, v, segment_ids=SEGMENT_IDS, implementation="reference")
    assert rel_err(o, want) < 2e-2  # bf16 rounding of inputs and output


def _bad_inputs() -> list[tuple[str, dict]]:
    q = jnp.ones((B, T, 4, D))
    kv = jnp.ones((B, T, 2, D))
    ok = dict(q=q, k=kv, v=kv)
    return [
        ("rank", dict(ok, q=jnp.ones((B, T, 4 * D)))),
        ("head multiple", dict(ok, k=jnp.ones((B, T, 3, D)), v=jnp.ones((B, T, 3, D)))),
        ("k dim", dict(ok, k=jnp.ones((B, T, 2, D + 1)))),
        ("v heads", dict(ok, v=jnp.ones((B, T, 1, D)))),
        ("time", dict(ok, k=jnp.ones((B, T + 1, 2, D)))),
        ("segment shape", dict(ok, segment_ids=jnp.zeros((B, T - 1), jnp.int32))),
        ("segment dtype", dict(ok, segment_ids=jnp.zeros((B, T)))),
        ("implementation", dict(ok, implementation="cudnn")),
        ("decreasing segments", dict(ok, segment_ids=jnp.flip(jnp.arange(B * T).reshape(B, T), 1))),
    ]


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
def test_validation_errors(case: tuple[str, dict]) -> None:
    with pytest.raises(ValueError):
        attention(**case[1])


@pytest.mark.parametrize("window", [1, 3, 7])
@pytest.mark.parametrize("implementation", ["xla", "reference"])
def test_sliding_window_equals_attention_over_the_window(window: int, implementation: str):
    """Each query under a window of w sees exactly its last w keys: the same output as full
    causal attention over that slice alone; a window of T is full causal attention."""
    q, k, v = normal(0, (1, T, 2, D)), normal(1, (1, T, 2, D)), normal(2, (1, T, 2, D))
    o = attention(q, k, v, window=window, implementation=implementation)
    for t in (0, window - 1, window, T - 1):
        lo = max(0, t - window + 1)
        sliced = attention(q[:, lo : t + 1], k[:, lo : t + 1], v[:, lo : t + 1], causal=True)
        assert rel_err(o[:, t], sliced[:, -1]) < TOL, t
    full = attention(q, k, v, window=T, implementation=implementation)
    assert rel_err(full, attention(q, k, v, implementation=implementation)) < TOL


def test_attention_decode_matches_causal_attention():
    """New queries over a cache filled to start + T equal the matching rows of causal attention."""
    q, k, v = normal(0, (2, T, 4, D)), normal(1, (2, T, 2, D)), normal(2, (2, T, 2, D))
    full = attention(q, k, v, window=5)
    k_cache = jnp.zeros((2, 32, 2, D)).at[:, :T].set(k)
    v_cache = jnp.zeros((2, 32, 2, D)).at[:, :T].set(v)
    got = attention_decode(q[:, 10:14], k_cache, v_cache, jnp.asarray(10), window=5)
    assert rel_err(got, full[:, 10:14]) < TOL


@pytest.mark.parametrize("bad", [0, -2])
def test_window_must_be_positive(bad: int):
    q = normal(0, (1, 4, 1, D))
    with pytest.raises(ValueError, match="window"):
        attention(q, q, q, window=bad)
    with pytest.raises(ValueError, match="window"):
        attention(q, q, q, window=2, causal=False)
