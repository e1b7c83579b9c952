"""EcoFormer binary hashing attention (Liu et al., NeurIPS 2022). Non-causal global reduction
over b-bit hash codes (one einsum per head, no engine call); the hash functions are fit outside
SGD by kernelised supervised hashing (KSH).

    x_i  = qk_i / ||qk_i||                      (one shared query/key projection, per head)
    h(x) = sign(A (kappa(x) - mu)) in {-1,+1}^b,  kappa_m(x) = exp(-||x - a_m||^2 / (2 sigma^2))
    o_i  = (h_i sum_j h_j^T v_j + (b+1) v_i) / (h_i . sum_j h_j + N (b+1))

then the output projection. sigma^2 is the mean of ||x - a_m||^2 over the image's tokens and the
m anchors, recomputed every call (`KernelSH.forward`); the sign has a straight-through gradient
clipped to |y| < 1 (`BinaryQuantizer`), so W_qk learns through the codes. The (b+1) v_i term is
the token's own value, as coded (`linear_attention_bias`); value_bias="sum" uses (b+1) sum_j v_j
instead, i.e. the consistent kernel h_i . h_j + b + 1 (docs/mixers.md#ecoformer).
Permutation-equivariant.

The hash parameters (A [H, b, m], mu [H, m], anchors [H, m, K]) are `HashBuffer` variables, not
`nnx.Param`: they are read under stop_gradient, so a trainer that differentiates the whole module
gets exactly zero gradients for them (AdamW then leaves them unchanged; they are not decayed), and
one that optimises `nnx.Param` never sees them. `refit_hash(x, key)` refits them on a batch as the
reference does on the first batch of every epoch: anchors = m random tokens of the first image,
mu = the mean kernel features, and, bit by bit, A's row by 100 Nesterov-SGD steps on the sigmoid
relaxation of the KSH loss against S0 (+1 for each token's `topk` most similar tokens, -1 for the
`topk` least), kept only if its sign codes lower the loss, then S <- S - y y^T. Before a refit the
anchors are random unit vectors and mu = 0. In PVTv2 EcoFormer replaces stages 1-3 (stage 4 keeps
softmax attention) and is fine-tuned from a pretrained model.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense
from linmix.models.mixers.base import Mixer, Options

VALUE_BIASES = ("own", "sum")
KSH_ITERATIONS, KSH_LR, KSH_MOMENTUM = 100, 5e-4, 0.9  # hashing/ksh.py KernelSH defaults


@dataclasses.dataclass(frozen=True)
class EcoFormerOptions(Options):
    nbits: int = 16  # b, code length (configs/pvt_v2/*_ecoformer.py `nbits`)
    num_anchors: int = 25  # m, RBF anchors (`m`)
    topk: int = 10  # similar / dissimilar targets per token when refitting (`topk`)
    value_bias: str = "own"  # "own": (b+1) v_i as coded; "sum": (b+1) sum_j v_j
    qkv_bias: bool = True  # pvt_v2_b*: qkv_bias=True


class HashBuffer(nnx.Variable):
    """A hash-function array fitted outside SGD (`refit_hash`), never a trainable parameter."""


@jax.custom_jvp
def sign_ste(y: jax.Array) -> jax.Array:
    """sign(y) with the straight-through gradient 1[|y| < 1] (EcoFormer's BinaryQuantizer)."""
    return jnp.sign(y)


@sign_ste.defjvp
def _sign_ste_jvp(primals, tangents):
    (y,), (dy,) = primals, tangents
    return jnp.sign(y), jnp.where(jnp.abs(y) < 1, dy, jnp.zeros_like(dy))


def rbf_features(x_BTHK: jax.Array, anchor_HMK: jax.Array) -> jax.Array:
    """kappa [B, T, H, M]: RBF of each token to each anchor, bandwidth from the image's mean."""
    d2_BTHM = jnp.square(x_BTHK[:, :, :, None, :] - anchor_HMK[None, None]).sum(-1)
    sigma_B1H1 = d2_BTHM.mean(axis=(1, 3), keepdims=True)
    return jnp.exp(-d2_BTHM / (2 * sigma_B1H1))


def ksh_loss(y_BTHC: jax.Array, s_BHTT: jax.Array, nbits: int) -> jax.Array:
    """KSH objective -y^T S y / (N b), averaged over images and heads (`compute_loss`)."""
    t = y_BTHC.shape[1]
    return -jnp.einsum("bshc,bhst,bthc->bhc", y_BTHC, s_BHTT, y_BTHC).mean() / (t * nbits)


@functools.partial(jax.jit, static_argnames=("topk", "iterations"))
def fit_ksh(x_BTHK, anchor_HMK, a_HCM, *, topk: int, iterations: int, lr: float, momentum: float):
    """KSH without eigen-initialisation (`train_hashing_weight_woeig`): (A [H, b, m], mu [H, m])."""
    t, nbits = x_BTHK.shape[1], a_HCM.shape[1]
    kappa_BTHM = rbf_features(x_BTHK, anchor_HMK)
    mu_HM = kappa_BTHM.mean(axis=(0, 1))
    kappa_BTHM = kappa_BTHM - mu_HM[None, None]
    sim_BHTT = jnp.einsum("bshk,bthk->bhst", x_BTHK, x_BTHK)
    k = min(topk, t)
    top_BHTT = jax.nn.one_hot(jax.lax.top_k(sim_BHTT, k)[1], t).sum(-2) > 0
    low_BHTT = jax.nn.one_hot(jax.lax.top_k(-sim_BHTT, k)[1], t).sum(-2) > 0
    s_BHTT = jnp.where(low_BHTT, -1.0, jnp.where(top_BHTT, 1.0, 0.0)) * nbits

    def codes(a_HM, relaxed):
        y_BTH = jnp.einsum("bthm,hm->bth", kappa_BTHM, a_HM)
        y_BTH = 2 * jax.nn.sigmoid(y_BTH) - 1 if relaxed else jnp.where(y_BTH > 0, 1.0, -1.0)
        return y_BTH[..., None]

    def fit_bit(s_BHTT, a_HM):
        def sgd(carry, _):  # torch SGD(momentum, nesterov=True)
            a, buf = carry
            g = jax.grad(lambda a: ksh_loss(codes(a, True), s_BHTT, nbits))(a)
            buf = momentum * buf + g
            return (a - lr * (g + momentum * buf), buf), None

        (fit_HM, _), _ = jax.lax.scan(sgd, (a_HM, jnp.zeros_like(a_HM)), None, iterations)
        old, new = codes(a_HM, False), codes(fit_HM, False)
        better = ksh_loss(new, s_BHTT, nbits) < ksh_loss(old, s_BHTT, nbits)
        y_BTH = jnp.where(better, new, old)[..., 0]
        s_BHTT = s_BHTT - jnp.einsum("bsh,bth->bhst", y_BTH, y_BTH)
        return s_BHTT, jnp.where(better, fit_HM, a_HM)

    _, a_CHM = jax.lax.scan(fit_bit, s_BHTT, a_HCM.transpose(1, 0, 2))
    return a_CHM.transpose(1, 0, 2), mu_HM


class KernelHash(nnx.Module):
    """h(x) = sign(A (kappa(x) - mu)): b-bit codes [B, T, H, b] of unit vectors [B, T, H, K]."""

    def __init__(self, heads: int, head_dim: int, nbits: int, anchors: int, *, rngs: nnx.Rngs):
        self.A = HashBuffer(jax.random.normal(rngs.params(), (heads, nbits, anchors)))
        self.mu = HashBuffer(jnp.zeros((heads, anchors), jnp.float32))
        a_HMK = jax.random.normal(rngs.params(), (heads, anchors, head_dim))
        self.anchor = HashBuffer(a_HMK / jnp.linalg.norm(a_HMK, axis=-1, keepdims=True))

    def project(self, x_BTHK: jax.Array) -> jax.Array:
        """A (kappa(x) - mu) [B, T, H, b]: the codes before the sign."""
        a_HCM, mu_HM, anchor_HMK = (
            jax.lax.stop_gradient(v[...]) for v in (self.A, self.mu, self.anchor)
        )
        kappa_BTHM = rbf_features(x_BTHK, anchor_HMK) - mu_HM[None, None]
        return jnp.einsum("bthm,hcm->bthc", kappa_BTHM, a_HCM)

    def __call__(self, x_BTHK: jax.Array) -> jax.Array:
        return sign_ste(self.project(x_BTHK))


class EcoFormer(Mixer, nnx.Module):
    """Binary hashing attention of EcoFormer (Liu, Pan, He, Cai & Zhuang, NeurIPS 2022,
    arXiv:2209.09004).

    No engine: a normalised global reduction over b-bit hash codes (one einsum per head). A
    shared query/key per head, scaled to unit length, is hashed by h(x) = sign(A (kappa(x) -
    mu)) with RBF features kappa to m anchors (straight-through sign); the codes are the feature
    map, and a (b + 1) value term is added. The hash functions are not trained by gradients:
    `refit_hash` fits them by kernelised supervised hashing. Bidirectional: no cache;
    permutation-equivariant; packed segments are not supported.

    Options (defaults of the released PVTv2 configs; num_heads: `Mixer`):
        nbits (16): b, bits per hash code.
        num_anchors (25): m, RBF anchors of the hash features.
        topk (10): similar and dissimilar targets per token when `refit_hash` fits the hash.
        value_bias ("own"): "own" adds (b + 1) v_i, as coded; "sum" adds (b + 1) sum_j v_j, the
            kernel-consistent variant.
        qkv_bias (True): biases on the shared q/k and the v projections.
    """

    name = "ecoformer"
    Options = EcoFormerOptions
    causal = False
    permutation_equivariant = True  # per-token codes, global sums, an order-free bandwidth

    @classmethod
    def check(cls, cfg, opts) -> None:
        super().check(cfg, opts)
        for field in ("nbits", "num_anchors", "topk"):
            if getattr(opts, field) < 1:
                raise ValueError(f"mixer 'ecoformer': {field} must be >= 1")
        if opts.value_bias not in VALUE_BIASES:
            raise ValueError(
                f"mixer 'ecoformer': value_bias {opts.value_bias!r} not in {VALUE_BIASES}"
            )

    def __init__(self, cfg, *, rngs: nnx.Rngs, options: dict | None = None):
        o = self.options_from(cfg, options)
        self.dtype = dtype = self.compute_dtype(cfg)
        d = cfg.d_model
        self.num_heads = h = o.num_heads or cfg.num_heads
        self.to_qk = dense(d, d, rngs=rngs, dtype=dtype, use_bias=o.qkv_bias)
        self.to_v = dense(d, d, rngs=rngs, dtype=dtype, use_bias=o.qkv_bias)
        self.proj = dense(d, d, rngs=rngs, dtype=dtype, use_bias=True)
        self.hash = KernelHash(h, d // h, o.nbits, o.num_anchors, rngs=rngs)
        self.nbits, self.topk = o.nbits, o.topk
        self.own_value = o.value_bias == "own"

    def unit_qk(self, x_BTD: jax.Array) -> jax.Array:
        """The shared query/key per head, scaled to unit length, fp32 [B, T, H, K]."""
        b, t, _ = x_BTD.shape
        qk_BTHK = self.to_qk(x_BTD).astype(jnp.float32).reshape(b, t, self.num_heads, -1)
        return qk_BTHK * jax.lax.rsqrt(jnp.square(qk_BTHK).sum(-1, keepdims=True) + 1e-24)

    def refit_hash(
        self,
        x_BTD: jax.Array,
        key: jax.Array,
        *,
        iterations: int = KSH_ITERATIONS,
        lr: float = KSH_LR,
        momentum: float = KSH_MOMENTUM,
    ) -> None:
        """Refit the hash functions (anchors, mu, A) by KSH on the mixer inputs x [B, T, D]."""
        x_BTHK = jax.lax.stop_gradient(self.unit_qk(x_BTD))
        t, m = x_BTHK.shape[1], self.hash.mu[...].shape[-1]
        idx = jax.random.choice(key, t, (m,), replace=t < m)
        anchor_HMK = x_BTHK[0, idx].transpose(1, 0, 2)
        a_HCM, mu_HM = fit_ksh(
            x_BTHK,
            anchor_HMK,
            self.hash.A[...],
            topk=self.topk,
            iterations=iterations,
            lr=lr,
            momentum=momentum,
        )
        self.hash.A[...], self.hash.mu[...], self.hash.anchor[...] = a_HCM, mu_HM, anchor_HMK

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        if segment_ids is not None:
            raise ValueError(f"mixer {self.name!r}: packed segments are not supported (one image)")
        b, t, d = x_BTD.shape
        h_BTHK = self.hash(self.unit_qk(x_BTD))
        v_BTHV = self.to_v(x_BTD).astype(jnp.float32).reshape(b, t, self.num_heads, -1)
        c = self.nbits + 1.0
        kv_BHKV = jnp.einsum("bthc,bthv->bhcv", h_BTHK, v_BTHV)
        own_BTHV = v_BTHV if self.own_value else v_BTHV.sum(axis=1, keepdims=True)
        num_BTHV = jnp.einsum("bthc,bhcv->bthv", h_BTHK, kv_BHKV) + c * own_BTHV
        den_BTH = jnp.einsum("bthc,bhc->bth", h_BTHK, h_BTHK.sum(axis=1)) + t * c
        o_BTD = (num_BTHV / den_BTH[..., None]).astype(self.dtype).reshape(b, t, d)
        return self.proj(o_BTD), None
