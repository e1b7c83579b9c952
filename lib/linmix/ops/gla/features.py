"""Feature maps phi for kernel linear attention, and the denominator normaliser.

Linear attention runs `gla(phi(q), phi(k), v, ...)`. Feature maps act on the last axis and may
change its size (taylor2: d -> 1 + d + d^2; random features: d -> m), so pass `scale=1.0` to
`gla` when phi already carries the kernel's scaling: the default K**-0.5 would use the feature
dimension.

Normalised linear attention o_t = sum_s w_ts v_s / sum_s w_ts (w_ts = phi(q_t) . phi(k_s), times
the decay between s and t) is `gla` on `with_denominator(v)` followed by `divide_by_denominator`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

_F32 = jnp.float32


def taylor2(x: jax.Array) -> jax.Array:
    """2nd-order Taylor features of exp (Based, JRT-RNN): [..., d] -> [..., 1 + d + d^2].

    phi(x) = [1, x / d**0.25, vec(x x^T) / (sqrt(2) d**0.5)], so that
    phi(q) . phi(k) = 1 + q.k / sqrt(d) + (q.k)^2 / (2 d), the Taylor expansion of
    exp(q.k / sqrt(d)) to second order. This kernel is always > 0 (it is ((1 + u)^2 + 1) / 2 with
    u = q.k / sqrt(d)), although single features may be negative. The full outer product is kept
    (d^2 features, each off-diagonal pair twice), not its d (d + 1) / 2 unique entries.
    """
    d = x.shape[-1]
    outer = (x[..., :, None] * x[..., None, :]).reshape(*x.shape[:-1], d * d)
    ones = jnp.ones((*x.shape[:-1], 1), x.dtype)
    return jnp.concatenate([ones, x / d**0.25, outer / (2**0.5 * d**0.5)], axis=-1)


def elu1(x: jax.Array) -> jax.Array:
    """elu(x) + 1, i.e. x + 1 for x > 0 and exp(x) otherwise, written so it stays > 0: the
    literal elu(x) + 1 rounds to exactly 0 in fp32 for x < -17 (expm1(x) rounds to -1)."""
    return jnp.where(x > 0, x + 1.0, jnp.exp(jnp.where(x > 0, 0.0, x)))


FEATURE_MAPS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "identity": lambda x: x,
    "elu1": elu1,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    "taylor2": taylor2,
}


def feature_map(name: str) -> Callable[[jax.Array], jax.Array]:
    """The stateless feature map called `name` (a key of FEATURE_MAPS)."""
    if name not in FEATURE_MAPS:
        raise ValueError(f"unknown feature map {name!r}; known: {sorted(FEATURE_MAPS)}")
    return FEATURE_MAPS[name]


def random_projection(key: jax.Array, K: int, m: int, *, orthogonal: bool = True) -> jax.Array:
    """Draw W [K, m] for `positive_random_features`: every column is marginally N(0, I_K).

    orthogonal=True (Performer's ORF): columns come in blocks of K that are exactly orthogonal,
    each a uniformly random direction times the norm of an independent N(0, I_K) vector. This
    keeps the estimate unbiased and lowers its variance. orthogonal=False: i.i.d. Gaussian.
    """
    if K <= 0 or m <= 0:
        raise ValueError(f"K and m must be positive, got K={K}, m={m}")
    if not orthogonal:
        return jax.random.normal(key, (K, m), _F32)
    n_blocks = -(-m // K)
    key_dir, key_norm = jax.random.split(key)
    G_NKK = jax.random.normal(key_dir, (n_blocks, K, K), _F32)
    Q_NKK, R_NKK = jnp.linalg.qr(G_NKK)
    # Sign fix makes Q Haar-distributed (QR alone biases the column signs).
    Q_NKK = Q_NKK * jnp.sign(jnp.diagonal(R_NKK, axis1=-2, axis2=-1))[:, None, :]
    norms_NK = jnp.linalg.norm(jax.random.normal(key_norm, (n_blocks, K, K), _F32), axis=1)
    W_NKK = Q_NKK * norms_NK[:, None, :]
    return jnp.transpose(W_NKK, (1, 0, 2)).reshape(K, n_blocks * K)[:, :m]


def positive_random_features(
    x: jax.Array, proj: jax.Array, *, stabilize: bool = False
) -> jax.Array:
    """FAVOR+ positive random features (Performer): [..., K] -> [..., m], all > 0.

    phi(x) = exp(x W - |x|^2 / 2) / sqrt(m) with W = proj [K, m] (see `random_projection`), so
    phi(q) . phi(k) is an unbiased estimate of the softmax kernel exp(q.k). For softmax attention
    with logits q.k / sqrt(K), feed q and k scaled by K**-0.25. Computed in fp32, cast back.

    Overflow: the exponent equals |w_j|^2 / 2 - |x - w_j|^2 / 2 <= |w_j|^2 / 2 ~ K / 2, so for
    moderate K it cannot overflow fp32; for large |x| every feature can underflow to 0 instead.

    stabilize=True subtracts, per token, the max over the m features of the exponent (held
    constant for gradients), so the largest feature is exactly 1 / sqrt(m). This multiplies
    phi(x) by a per-token constant exp(-c_x): the estimate becomes exp(q.k - c_q - c_k), no
    longer of exp(q.k). It cancels only in normalised attention (numerator and denominator share
    it), and only for queries: use it on q, never on k, whose per-token factors differ between
    the keys a query mixes and would reweight them.
    """
    if proj.ndim != 2 or proj.shape[0] != x.shape[-1]:
        raise ValueError(f"proj must be [K, m] with K = {x.shape[-1]}, got {proj.shape}")
    x32 = x.astype(_F32)
    proj32 = proj.astype(_F32)
    xw = jnp.einsum("...k,km->...m", x32, proj32, precision=jax.lax.Precision.HIGHEST)
    expo = xw - 0.5 * jnp.sum(x32 * x32, axis=-1, keepdims=True)
    if stabilize:
        expo = expo - jax.lax.stop_gradient(jnp.max(expo, axis=-1, keepdims=True))
    return (jnp.exp(expo) / proj.shape[1] ** 0.5).astype(x.dtype)


def with_denominator(v: jax.Array) -> jax.Array:
    """Append a ones column to v: [..., V] -> [..., V + 1].

    Run through `gla`, the last output column is then scale * q_t . z_t, with z_t the decayed sum
    of the keys (the state's last column), i.e. the denominator of normalised linear attention.
    """
    return jnp.concatenate([v, jnp.ones((*v.shape[:-1], 1), v.dtype)], axis=-1)


def divide_by_denominator(o: jax.Array, eps: float = 1e-6) -> jax.Array:
    """o[..., :-1] / (o[..., -1:] + eps): normalised attention from a `with_denominator` output.

    The scale of `gla` cancels (up to eps). Needs phi(q) . phi(k) >= 0 (positive feature maps such
    as elu1, relu, softmax, random features, or the taylor2 kernel): with signed weights the
    denominator can be near 0 or negative and the quotient blows up.
    """
    return o[..., :-1] / (o[..., -1:] + eps)
