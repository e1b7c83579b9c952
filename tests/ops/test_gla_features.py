"""Feature maps, positive random features and the denominator trick for linear attention."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linmix.ops.gla import gla
from linmix.ops.gla.features import (
    FEATURE_MAPS,
    divide_by_denominator,
    feature_map,
    positive_random_features,
    random_projection,
    with_denominator,
)
from linmix.testing.numerics import rel_err

B, T, H, K, V = 2, 24, 2, 8, 12
FP32_TOL = 1e-4


def normal(seed: int, shape: tuple[int, ...], std: float = 1.0) -> jax.Array:
    return jnp.asarray(std * np.random.default_rng(seed).normal(size=shape), jnp.float32)


def with_norms(seed: int, shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
    """Random vectors along the last axis with norms uniform in [lo, hi] (float64)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x * rng.uniform(lo, hi, size=(*shape[:-1], 1))


# ----------------------------------------------------------------------------- feature maps


def test_identity_elu1_relu_silu() -> None:
    x = jnp.linspace(-20.0, 20.0, 4 * 101).reshape(4, 101)
    xn = np.asarray(x, np.float64)
    assert np.array_equal(feature_map("identity")(x), x)
    elu1 = np.asarray(feature_map("elu1")(x), np.float64)
    assert (elu1 > 0).all()
    want = np.where(xn > 0, xn + 1.0, np.exp(xn))  # elu(x) + 1
    assert np.allclose(elu1, want, rtol=1e-5, atol=0)
    grad = jax.grad(lambda x: feature_map("elu1")(x).sum())(jnp.asarray([-200.0, 0.0, 200.0]))
    assert np.array_equal(grad, [0.0, 1.0, 1.0])  # finite, no inf * 0 from the unused branch
    assert np.array_equal(feature_map("relu")(x), np.maximum(xn, 0))
    assert np.allclose(feature_map("silu")(x), xn / (1 + np.exp(-xn)), rtol=1e-5, atol=1e-6)


def test_softmax_over_feature_axis() -> None:
    x = normal(0, (B, T, H, K), std=3.0)
    p = np.asarray(feature_map("softmax")(x), np.float64)
    assert p.shape == x.shape and (p > 0).all()
    assert np.allclose(p.sum(-1), 1.0, atol=1e-6)
    e = np.exp(np.asarray(x, np.float64))
    assert np.allclose(p, e / e.sum(-1, keepdims=True), rtol=1e-5)


def test_taylor2_kernel_identity() -> None:
    d = K
    q = normal(1, (B, T, H, d))
    k = normal(2, (B, T, H, d))
    pq, pk = feature_map("taylor2")(q), feature_map("taylor2")(k)
    assert pq.shape == (B, T, H, 1 + d + d * d)
    got = np.einsum("bthf,bshf->bhts", np.asarray(pq, np.float64), np.asarray(pk, np.float64))
    qk = np.einsum("bthd,bshd->bhts", np.asarray(q, np.float64), np.asarray(k, np.float64))
    want = 1.0 + qk / d**0.5 + qk**2 / (2 * d)
    assert rel_err(got, want) < 1e-5
    # It is the second-order Taylor expansion of exp(q.k / sqrt(d)): third-order error.
    small_q = jnp.asarray(with_norms(3, (16, d), 0.2, 0.6), jnp.float32)
    small_k = jnp.asarray(with_norms(4, (16, d), 0.2, 0.6), jnp.float32)
    u = np.asarray(small_q @ small_k.T, np.float64) / d**0.5
    fq, fk = (np.asarray(feature_map("taylor2")(x), np.float64) for x in (small_q, small_k))
    got = fq @ fk.T  # in float64: an fp32 product's rounding (~5e-7 at 1.0) is not the map's error
    assert np.all(np.abs(got - np.exp(u)) < np.abs(u) ** 3 / 6 * 1.1 + 1e-6)


def test_feature_map_lookup() -> None:
    for name, fn in FEATURE_MAPS.items():
        assert feature_map(name) is fn
    assert {"identity", "elu1", "relu", "silu", "softmax", "taylor2"} <= set(FEATURE_MAPS)
    with pytest.raises(ValueError, match="taylor2") as err:
        feature_map("cosformer")
    assert "cosformer" in str(err.value) and "elu1" in str(err.value)


# ---------------------------------------------------------------- positive random features


@pytest.mark.parametrize("orthogonal", [True, False])
def test_random_projection_distribution(orthogonal: bool) -> None:
    m = 8192
    W = np.asarray(random_projection(jax.random.key(0), K, m, orthogonal=orthogonal), np.float64)
    assert W.shape == (K, m)
    # Columns marginally N(0, I): E[w w^T] = I (entries of W W^T / m have std <= sqrt(2 / m)).
    assert np.abs(W @ W.T / m - np.eye(K)).max() < 6 * (2 / m) ** 0.5
    # ... so the squared column norms are chi^2_K: mean K, variance 2K (std of the sample
    # variance ~ sqrt((8K^2 + 48K) / m)). Unit or fixed-norm columns would fail the variance.
    norms2 = np.sum(W**2, axis=0)
    assert abs(norms2.mean() - K) < 5 * (2 * K / m) ** 0.5
    assert abs(norms2.var() - 2 * K) < 5 * ((8 * K**2 + 48 * K) / m) ** 0.5
    if orthogonal:
        # Each block of K columns is exactly orthogonal (with chi-distributed norms).
        gram = W[:, K : 2 * K].T @ W[:, K : 2 * K]
        assert np.abs(gram - np.diag(np.diag(gram))).max() < 1e-4 * np.diag(gram).max()
    else:
        gram = W[:, :K].T @ W[:, :K]
        assert np.abs(gram - np.diag(np.diag(gram))).max() > 0.1
    assert random_projection(jax.random.key(0), K, 20).shape == (K, 20)  # m not a multiple of K


@pytest.mark.parametrize("orthogonal", [True, False])
def test_positive_random_features_estimate_exp(orthogonal: bool) -> None:
    m, n = 8192, 16
    W = random_projection(jax.random.key(1), K, m, orthogonal=orthogonal)
    q = with_norms(5, (n, K), 0.3, 0.6)
    k = with_norms(6, (n, K), 0.3, 0.6)
    pq = np.asarray(positive_random_features(jnp.asarray(q, jnp.float32), W), np.float64)
    pk = np.asarray(positive_random_features(jnp.asarray(k, jnp.float32), W), np.float64)
    assert pq.shape == (n, m) and (pq > 0).all() and (pk > 0).all()
    want = np.exp(q @ k.T)
    # Relative std of the i.i.d. estimate (Performer, Lemma 2): sqrt((exp|q + k|^2 - 1) / m);
    # orthogonal features only lower it.
    sum_sq = np.sum((q[:, None, :] + k[None, :, :]) ** 2, axis=-1)
    rel_std = np.sqrt((np.exp(sum_sq) - 1) / m)
    z = np.abs(pq @ pk.T / want - 1) / rel_std
    assert z.max() < 5, z.max()


def test_stabilized_queries_cancel_in_normalized_attention() -> None:
    m = 256
    W = random_projection(jax.random.key(2), K, m)
    k = jnp.asarray(with_norms(7, (T, K), 0.3, 1.0), jnp.float32)
    v = np.random.default_rng(8).normal(size=(T, V))
    # Queries of norm 20-30: exp(x W - |x|^2 / 2) underflows to 0 in fp32 for every feature.
    q = jnp.asarray(with_norms(9, (T, K), 20.0, 30.0), jnp.float32)
    pq = positive_random_features(q, W, stabilize=True)
    assert np.allclose(pq.max(-1), m**-0.5, rtol=1e-6)
    assert (np.asarray(positive_random_features(q, W)) == 0).all(axis=-1).any()
    # Exact in float64: the unstabilised features' normalised attention.
    Wn, qn = np.asarray(W, np.float64), np.asarray(q, np.float64)
    pq_exact = np.exp(qn @ Wn - 0.5 * np.sum(qn**2, -1, keepdims=True)) / m**0.5
    pk = np.asarray(positive_random_features(k, W), np.float64)

    def normalized(pq_):
        w = pq_ @ pk.T
        return (w @ v) / w.sum(-1, keepdims=True)

    assert rel_err(normalized(np.asarray(pq, np.float64)), normalized(pq_exact)) < 1e-4
    # Stabilising keys would reweight them: it must not be the same attention.
    pk_stab = np.asarray(positive_random_features(k, W, stabilize=True), np.float64)
    w_bad = np.asarray(pq, np.float64) @ pk_stab.T
    assert rel_err((w_bad @ v) / w_bad.sum(-1, keepdims=True), normalized(pq_exact)) > 1e-2


def test_positive_random_features_checks_proj() -> None:
    with pytest.raises(ValueError, match="proj"):
        positive_random_features(jnp.ones((3, K)), jnp.ones((K + 1, 16)))


# ----------------------------------------------------------------------- denominator trick


@functools.cache
def prf_proj() -> jax.Array:
    """W for the random-feature map, drawn once outside jit (drawing it inside each jitted test
    function would recompile the QR every time)."""
    return random_projection(jax.random.key(3), K, 32)


PHI = {
    "elu1": lambda x, W, query: FEATURE_MAPS["elu1"](x),
    "softmax": lambda x, W, query: FEATURE_MAPS["softmax"](x),
    "taylor2": lambda x, W, query: FEATURE_MAPS["taylor2"](x),
    "prf": lambda x, W, query: positive_random_features(x * K**-0.25, W, stabilize=query),
}


def dense_normalized(pq, pk, v, g) -> tuple[np.ndarray, np.ndarray]:
    """float64 sum_{s<=t} w_ts v_s / sum_{s<=t} w_ts, w_ts = sum_i pq_ti pk_si decay_tsi with
    decay_tsi = prod_{s<j<=t} exp(g_ji). Returns (normalised output, denominator)."""
    pq, pk, v = (np.asarray(x, np.float64) for x in (pq, pk, v))
    F = pq.shape[-1]
    if g is None:
        G = np.zeros((*pq.shape[:3], 1))
    else:
        G = np.cumsum(np.asarray(g, np.float64), axis=1)
        G = G[..., None] if G.ndim == 3 else G
    causal = np.tril(np.ones((pq.shape[1], pq.shape[1])))[None, None, :, :, None]
    diff = G.transpose(0, 2, 1, 3)[:, :, :, None, :] - G.transpose(0, 2, 1, 3)[:, :, None, :, :]
    decay = np.broadcast_to(np.exp(np.minimum(diff, 0.0)) * causal, (*diff.shape[:-1], F))
    w = np.einsum("bthf,bshf,bhtsf->bhts", pq, pk, decay)
    num = np.einsum("bhts,bshv->bthv", w, v)
    den = w.sum(-1).transpose(0, 2, 1)[..., None]
    return num / den, den


@functools.partial(jax.jit, static_argnames=("name",))
def gla_normalized(q, k, v, g, W, *, name):
    pq, pk = PHI[name](q, W, query=True), PHI[name](k, W, query=False)
    o, _ = gla(pq, pk, with_denominator(v), g, scale=1.0, chunk_size=16)
    return divide_by_denominator(o), o[..., -1:], pq, pk


@pytest.mark.parametrize(
    ("name", "gate"),
    [(n, g) for n in PHI for g in (None, "scalar")]
    + [("elu1", "vector"), ("softmax", "vector"), ("prf", "vector")],
)
def test_denominator_trick_is_normalized_attention(name: str, gate: str | None) -> None:
    q, k, v = normal(10, (B, T, H, K)), normal(11, (B, T, H, K)), normal(12, (B, T, H, V))
    W = prf_proj()
    g = None
    if gate == "scalar":
        g = -jnp.abs(normal(13, (B, T, H), std=0.2))
    elif gate == "vector":
        # Per feature channel, so the gate has the feature dimension.
        F = jax.eval_shape(lambda x: PHI[name](x, W, query=False), q).shape[-1]
        g = -jnp.abs(normal(13, (B, T, H, F), std=0.2))
    o, den, pq, pk = gla_normalized(q, k, v, g, W, name=name)
    want, want_den = dense_normalized(pq, pk, v, g)
    assert o.shape == (B, T, H, V)
    # The last column, before division, is phi(q_t) . z_t with z_t the decayed key sum.
    assert rel_err(den, want_den) < FP32_TOL
    assert rel_err(o, want) < FP32_TOL


def test_with_denominator_and_divide() -> None:
    v = normal(14, (B, T, H, V)).astype(jnp.bfloat16)
    vd = with_denominator(v)
    assert vd.shape == (B, T, H, V + 1) and vd.dtype == jnp.bfloat16
    assert np.array_equal(vd[..., :V], v) and (np.asarray(vd[..., V]) == 1).all()
    # Dividing the ones-augmented v by itself leaves v: each row's denominator is 1 (+ eps).
    assert rel_err(divide_by_denominator(vd.astype(jnp.float32), eps=0.0), v) == 0.0
    scaled = 3.0 * vd.astype(jnp.float32)
    assert rel_err(divide_by_denominator(scaled, eps=1e-6), v) < 1e-6


def test_performer_approximates_softmax_attention() -> None:
    """Normalised attention with many random features ~ exact causal softmax attention."""
    m, Tn = 4096, 16
    W = random_projection(jax.random.key(4), K, m)
    q = jnp.asarray(with_norms(15, (B, Tn, H, K), 0.5, 1.0), jnp.float32)
    k = jnp.asarray(with_norms(16, (B, Tn, H, K), 0.5, 1.0), jnp.float32)
    v = normal(17, (B, Tn, H, V))
    pq = positive_random_features(q, W, stabilize=True)
    pk = positive_random_features(k, W)
    o, _ = gla(pq, pk, with_denominator(v), scale=1.0, chunk_size=16)
    o = divide_by_denominator(o)
    logits = np.einsum("bthk,bshk->bhts", np.asarray(q, np.float64), np.asarray(k, np.float64))
    logits = np.where(np.tril(np.ones((Tn, Tn), bool)), logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = np.einsum("bhts,bshv->bthv", p, np.asarray(v, np.float64))
    uniform = np.cumsum(np.asarray(v, np.float64), axis=1) / np.arange(1, Tn + 1)[:, None, None]
    tol = 0.025
    assert rel_err(uniform, want) > 4 * tol  # the check can tell softmax from a plain average
    assert rel_err(o, want) < tol, rel_err(o, want)
