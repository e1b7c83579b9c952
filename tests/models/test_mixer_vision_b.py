"""SLAB, L²ViT, LinFusion / LiT and EcoFormer against their formulas written as explicit T x T
attention matrices (float64 numpy, loops for the grid convs) on tiny inputs; plus EcoFormer's hash
refit (buffers only, anchors from the data, no gradient into the buffers) and clear errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linmix.models import REGISTRY, ModelConfig
from linmix.models.mixers.ecoformer import HashBuffer, sign_ste
from linmix.models.mixers.linfusion import LIT

nnx.set_graph_mode(False)

BASE = dict(vocab_size=64, d_model=16, num_layers=1, num_heads=2, mlp_ratio=0.0, causal=False)
H, K = 2, 8  # heads and head dim of BASE


def make(name, **options):
    cfg = ModelConfig(**BASE, mixer=name, mixer_options=options)
    return REGISTRY[name](cfg, rngs=nnx.Rngs(0))


@jax.jit
def run(m, x):
    return m(x)[0]


def inputs(t, seed=1, scale=1.0):
    x = np.random.default_rng(seed).standard_normal((2, t, BASE["d_model"]))
    return jnp.asarray(scale * x, jnp.float32)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def f64(x):
    return np.asarray(x, np.float64)


def linear(layer, x):
    y = f64(x) @ f64(layer.kernel[...])
    return y if layer.bias is None else y + f64(layer.bias[...])


def heads(y_BTD):
    b, t, _ = y_BTD.shape
    return y_BTD.reshape(b, t, H, K).transpose(0, 2, 1, 3)


def merge(o_BHTK):
    b, _, t, _ = o_BHTK.shape
    return o_BHTK.transpose(0, 2, 1, 3).reshape(b, t, H * K)


def conv_ref(x_NTC, conv, rows, cols):
    """Zero-padded 'same' depthwise cross-correlation with bias, one tap at a time."""
    w_kkC, bias_C = f64(conv.kernel[...]), f64(conv.bias[...])
    n, _, c = x_NTC.shape
    k = w_kkC.shape[0]
    p = k // 2
    x = x_NTC.reshape(n, rows, cols, c)
    out = np.zeros_like(x) + bias_C
    for i in range(rows):
        for j in range(cols):
            for di in range(k):
                for dj in range(k):
                    r, s = i + di - p, j + dj - p
                    if 0 <= r < rows and 0 <= s < cols:
                        out[:, i, j] += w_kkC[di, dj] * x[:, r, s]
    return out.reshape(n, rows * cols, c)


def layer_norm(ln, x, eps=1e-5):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * f64(ln.scale[...]) + f64(ln.bias[...])


def relu(x):
    return np.maximum(x, 0.0)


def randomize(param, seed, scale=0.5):
    param[...] = scale * jax.random.normal(jax.random.key(seed), param[...].shape)


# SLAB: relu(q) relu(k + P)^T normalised by its row sums (+1e-6), plus a shared 5x5 DWC on V.


def slab_ref(m, x, rows, cols):
    qkv = linear(m.qkv, x)
    q, k, v = np.split(qkv, 3, axis=-1)
    k = k + f64(m.key_positions(rows, cols))[None]
    a = np.einsum("bhsk,bhtk->bhst", relu(heads(q)), relu(heads(k)))
    o = a @ heads(v) / (a.sum(-1, keepdims=True) + 1e-6)
    b, t, _ = x.shape
    local = conv_ref(heads(v).reshape(b * H, t, K), m.dwc, rows, cols).reshape(b, H, t, K)
    return linear(m.proj, merge(o + local))


@pytest.mark.parametrize("rows,cols", [(4, 4), (3, 5)])
def test_slab_matches_quadratic_form(rows, cols):
    options = {"pos_grid": 4} | ({"grid_height": rows} if rows != cols else {})
    m = make("slab", **options)
    randomize(m.pos, 3)  # zero at init: make the key positions count
    x = inputs(rows * cols)
    y = run(m, x)
    assert rel_err(y, slab_ref(m, f64(x), rows, cols)) < 1e-5


def test_slab_position_table_resizes_by_interpolation():
    m = make("slab", pos_grid=4)
    m.pos[...] = jnp.broadcast_to(jnp.arange(16.0)[None, None], (4, 4, 16))
    np.testing.assert_allclose(m.key_positions(4, 4), m.pos[...].reshape(16, 16))
    # Bilinear weights sum to one: a table constant over the grid stays constant at any size.
    assert np.allclose(m.key_positions(6, 3), np.arange(16.0)[None])
    with pytest.raises(ValueError, match="not a square"):
        m(inputs(12))


# L²ViT: relu(q) (tau_h relu(k)^T v) / max(row sum, 100), projected, plus the LCM branch.


def gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def l2vit_ref(m, x, rows, cols, lcm=True):
    q, k, v = (heads(y) for y in np.split(linear(m.qkv, x), 3, axis=-1))
    a = np.einsum("bhsk,bhtk->bhst", relu(q), relu(k))
    tau = f64(m.temperature[...])[None, :, None, None]
    o = tau * (a @ v) / np.maximum(a.sum(-1, keepdims=True), 100.0)
    attn = linear(m.proj, merge(o))
    if not lcm:
        return attn
    u = layer_norm(m.norm3, x + attn)
    z = gelu(conv_ref(u, m.lcm.conv1, rows, cols))
    return attn + conv_ref(layer_norm(m.lcm.norm, z), m.lcm.conv2, rows, cols)


@pytest.mark.parametrize("scale", [1.0, 30.0])  # small inputs: clamped denominators; large: not
def test_l2vit_matches_quadratic_form(scale):
    m = make("l2vit")
    m.temperature[...] = jnp.array([0.3, 0.7])
    x = inputs(16, scale=scale)
    y = run(m, x)
    assert rel_err(y, l2vit_ref(m, f64(x), 4, 4)) < 1e-5
    q, k, _ = (heads(z) for z in np.split(linear(m.qkv, f64(x)), 3, axis=-1))
    den = np.einsum("bhsk,bhtk->bhs", relu(q), relu(k))
    assert (den < 100).any() if scale == 1.0 else (den > 100).all()


def test_l2vit_without_lcm_is_the_plain_linear_attention():
    m = make("l2vit", local_concentration=False)
    assert m.permutation_equivariant and not REGISTRY["l2vit"].permutation_equivariant
    x = inputs(12, scale=30.0)  # no grid needed without the LCM
    assert rel_err(run(m, x), l2vit_ref(m, f64(x), 0, 0, lcm=False)) < 1e-5


# LinFusion: elu+1 features of W(x + MLP(x)), mean-normalised with eps 1e-4. LiT: relu, sums,
# eps 1e-6 and a 5x5 DWC on V.


def linfusion_ref(m, x, lit, rows=0, cols=0):
    def mlp(f, x):
        hid = layer_norm(f.norm, linear(f.fc1, x))
        return x + linear(f.fc2, np.where(hid > 0, hid, 0.01 * hid))

    xq, xk = (x, x) if lit else (mlp(m.q_mlp, x), mlp(m.k_mlp, x))
    phi = relu if lit else (lambda z: np.where(z > 0, z + 1.0, np.exp(z)))
    q, k = phi(heads(linear(m.q, xq))), phi(heads(linear(m.k, xk)))
    v = linear(m.v, x)
    a = np.einsum("bhsk,bhtk->bhst", q, k)
    t = x.shape[1]
    if lit:
        o = merge(a @ heads(v) / (a.sum(-1, keepdims=True) + 1e-6))
        o = o + conv_ref(v, m.dwc, rows, cols)
    else:
        o = merge((a @ heads(v) / t) / (a.sum(-1, keepdims=True) / t + 1e-4))
    return linear(m.out, o)


def test_linfusion_matches_quadratic_form():
    m = make("linfusion")
    assert m.q_mlp is not None and m.dwc is None and m.permutation_equivariant
    x = inputs(10)  # no grid: any T
    assert rel_err(run(m, x), linfusion_ref(m, f64(x), lit=False)) < 1e-5


def test_lit_options_match_quadratic_form():
    m = make("linfusion", **LIT)
    assert m.q_mlp is None and m.dwc is not None and not m.permutation_equivariant
    x = inputs(16)
    assert rel_err(run(m, x), linfusion_ref(m, f64(x), lit=True, rows=4, cols=4)) < 1e-5


# EcoFormer: sign codes of RBF features of unit qk; (H H^T V + (b+1) V) / (H H^T 1 + N (b+1)).


def eco_projection(m, x):
    """A (kappa(x) - mu) [B, H, T, b] of the unit shared query/key x."""
    qk = heads(linear(m.to_qk, x))
    u = qk / np.linalg.norm(qk, axis=-1, keepdims=True)
    anchor = f64(m.hash.anchor[...])  # [H, M, K]
    d2 = np.square(u[:, :, :, None, :] - anchor[None, :, None]).sum(-1)  # [B, H, T, M]
    kappa = np.exp(-d2 / (2 * d2.mean(axis=(2, 3), keepdims=True)))
    kappa = kappa - f64(m.hash.mu[...])[None, :, None, :]
    return np.einsum("bhtm,hcm->bhtc", kappa, f64(m.hash.A[...]))


def eco_codes(m, x):
    return np.sign(eco_projection(m, x))


def ecoformer_ref(m, x, own=True):
    codes = eco_codes(m, x)
    nbits, t = codes.shape[-1], x.shape[1]
    w = np.einsum("bhsc,bhtc->bhst", codes, codes)
    v = heads(linear(m.to_v, x))
    bias = (nbits + 1) * (v if own else v.sum(2, keepdims=True))
    o = (w @ v + bias) / (w.sum(-1, keepdims=True) + t * (nbits + 1))
    return linear(m.proj, merge(o))


@pytest.mark.parametrize("value_bias", ["own", "sum"])
def test_ecoformer_matches_quadratic_form(value_bias):
    m = make("ecoformer", nbits=6, num_anchors=5, value_bias=value_bias)
    randomize(m.hash.mu, 4, 0.1)
    x = inputs(10)
    assert np.all(eco_codes(m, f64(x)) != 0)
    # The codes' signs hide small errors in the hash features: check those before the sign too.
    proj = jax.jit(lambda m, x: m.hash.project(m.unit_qk(x)))(m, x).transpose(0, 2, 1, 3)
    assert rel_err(proj, eco_projection(m, f64(x))) < 1e-5
    assert rel_err(run(m, x), ecoformer_ref(m, f64(x), own=value_bias == "own")) < 1e-5


def test_ecoformer_refit_changes_only_the_hash_buffers():
    m = make("ecoformer", nbits=6, num_anchors=5, topk=3)
    params = jax.tree.map(np.array, nnx.state(m, nnx.Param))
    a_before = np.array(m.hash.A[...])
    x = inputs(12)
    m.refit_hash(x, jax.random.key(7), iterations=20, lr=1.0)
    jax.tree.map(np.testing.assert_array_equal, nnx.state(m, nnx.Param), params)
    # Anchors are tokens of the first image (unit qk); mu is their mean RBF feature.
    qk = heads(linear(m.to_qk, f64(x)))
    u = qk / np.linalg.norm(qk, axis=-1, keepdims=True)
    anchor = f64(m.hash.anchor[...])
    dist = np.abs(anchor[:, :, None, :] - u[0][:, None, :, :]).max(-1)  # [H, M, T]
    assert (dist.min(-1) < 1e-6).all()
    d2 = np.square(u[:, :, :, None, :] - anchor[None, :, None]).sum(-1)
    kappa = np.exp(-d2 / (2 * d2.mean(axis=(2, 3), keepdims=True)))
    np.testing.assert_allclose(m.hash.mu[...], kappa.mean(axis=(0, 2)), rtol=1e-5)
    assert not np.array_equal(m.hash.A[...], a_before)
    assert rel_err(run(m, x), ecoformer_ref(m, f64(x))) < 1e-5


def test_ecoformer_buffers_get_no_gradient_and_qk_learns_through_the_codes():
    m = make("ecoformer", nbits=6, num_anchors=5)
    grads = jax.jit(jax.grad(lambda m, x: jnp.square(m(x)[0]).sum()))(m, inputs(9))
    buffers = nnx.state(grads, HashBuffer)
    assert jax.tree.leaves(buffers) and all(not np.any(leaf) for leaf in jax.tree.leaves(buffers))
    assert np.any(grads.to_qk.kernel[...] != 0)
    y = jnp.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    np.testing.assert_array_equal(jax.grad(lambda y: sign_ste(y).sum())(y), [0, 1, 1, 1, 0])


@pytest.mark.parametrize(
    "name,options,match",
    [
        ("slab", {"conv_size": 4}, "conv_size"),
        ("l2vit", {"denom_min": 0.0}, "denom_min"),
        ("linfusion", {"normalizer": "max"}, "normalizer"),
        ("linfusion", {"feature_map": "softmax"}, "feature_map"),
        ("ecoformer", {"value_bias": "all"}, "value_bias"),
        ("ecoformer", {"nbits": 0}, "nbits"),
    ],
)
def test_bad_options_are_named(name, options, match):
    with pytest.raises(ValueError, match=f"mixer '{name}'.*{match}"):
        make(name, **options)


@pytest.mark.parametrize("name", ["slab", "l2vit", "linfusion", "ecoformer"])
def test_packed_segments_are_refused(name):
    with pytest.raises(ValueError, match="segments"):
        make(name)(inputs(16), segment_ids=jnp.zeros((2, 16), jnp.int32))
