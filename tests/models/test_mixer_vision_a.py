"""MALA, RALA, InLine and Agent attention against their formulas written as explicit T x T
attention matrices (float64 numpy, loops for the grid pieces) on tiny inputs, including a
non-square grid; plus the options that make them position-free, and their clear errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linmix.models import REGISTRY, ModelConfig

nnx.set_graph_mode(False)

BASE = dict(vocab_size=64, d_model=32, num_layers=1, num_heads=2, mlp_ratio=0.0, causal=False)
H, K = 2, 16  # heads and head dim of BASE
GRIDS = [(4, 4), (3, 4)]  # (rows, cols); the second one needs grid_height=3


def make(name, grid, **options):
    if grid[0] != grid[1]:
        options["grid_height"] = grid[0]
    cfg = ModelConfig(**BASE, mixer=name, mixer_options=options)
    return REGISTRY[name](cfg, rngs=nnx.Rngs(0))


@jax.jit
def run(mixer, x):
    return mixer(x)[0]


def inputs(t, seed=1):
    return jax.random.normal(jax.random.key(seed), (2, t, BASE["d_model"]))


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def f64(x):
    return np.asarray(x, np.float64)


def heads(y_BTD):
    """[B, T, D] -> [B, H, T, K] float64."""
    b, t, _ = y_BTD.shape
    return f64(y_BTD).reshape(b, t, H, K).transpose(0, 2, 1, 3)


def merge(o_BHTK):
    b, _, t, _ = o_BHTK.shape
    return o_BHTK.transpose(0, 2, 1, 3).reshape(b, t, H * K)


def elu1(x):
    return np.where(x > 0, x + 1.0, np.exp(x))


def conv_ref(v_TC, w_kkC, gh, gw):
    """Zero-padded 'same' depthwise cross-correlation, one tap at a time."""
    k = w_kkC.shape[0]
    r = k // 2
    v = v_TC.reshape(gh, gw, -1)
    out = np.zeros_like(v)
    for i in range(gh):
        for j in range(gw):
            for a in range(k):
                for b in range(k):
                    ii, jj = i + a - r, j + b - r
                    if 0 <= ii < gh and 0 <= jj < gw:
                        out[i, j] += w_kkC[a, b] * v[ii, jj]
    return out.reshape(gh * gw, -1)


def rope_ref(x_TK, gh, gw):
    """MALA/RALA 2-D RoPE: pair i of the first K/4 pairs rotates by row * theta_i, pair i of
    the last K/4 by col * theta_i, theta_i = 10000^(-i / (K/4 - 1))."""
    out = x_TK.copy()
    quarter = K // 4
    for t in range(gh * gw):
        row, col = divmod(t, gw)
        for p in range(K // 2):
            i, pos = (p, row) if p < quarter else (p - quarter, col)
            ang = pos * 10000.0 ** (-i / (quarter - 1))
            x0, x1 = x_TK[t, 2 * p], x_TK[t, 2 * p + 1]
            out[t, 2 * p] = x0 * math.cos(ang) - x1 * math.sin(ang)
            out[t, 2 * p + 1] = x1 * math.cos(ang) + x0 * math.sin(ang)
    return out


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def projections(mixer, x):
    return heads(mixer.q(x)), heads(mixer.k(x)), mixer.v(x)


@pytest.mark.parametrize("grid", GRIDS)
def test_mala_equals_its_magnitude_aware_attention_matrix(grid):
    """a_ij = (1 + 1/z_i) (s/N) RoPE(phi q_i).RoPE(phi k_j) - z_i / N, z_i = s phi q_i.mean phi k;
    then + LePE(v), * (x W_o), W_proj."""
    mixer = make("mala", grid)
    gh, gw = grid
    n, s = gh * gw, K**-0.5
    x = inputs(n)
    q, k, v_BTD = projections(mixer, x)
    v = heads(v_BTD)
    out = np.zeros_like(v)
    for b in range(2):
        for h in range(H):
            pq, pk = elu1(q[b, h]), elu1(k[b, h])
            z = s * (pq @ pk.T).mean(axis=1)
            kappa = (s / n) * rope_ref(pq, gh, gw) @ rope_ref(pk, gh, gw).T
            a = (1.0 + 1.0 / (z + 1e-6))[:, None] * kappa - (z / n)[:, None]
            out[b, h] = a @ v[b, h]
    lepe = [conv_ref(f64(v_BTD[b]), f64(mixer.lepe.kernel[...]), gh, gw) for b in range(2)]
    y = (merge(out) + np.stack(lepe) + f64(mixer.lepe.bias[...])) * f64(mixer.gate(x))
    expect = mixer.proj(jnp.asarray(y, jnp.float32))
    assert rel_err(run(mixer, x), expect) < 1e-5


@pytest.mark.parametrize("grid", GRIDS)
def test_rala_equals_its_reweighted_attention_matrix(grid):
    """alpha = softmax_j(s mean_i phi q_i . phi k_j), k'_j = N alpha_j phi k_j,
    a_ij = RoPE(phi q_i).RoPE(k'_j) / N / (phi q_i . mean k'); then + LePE(v), gate, W_proj."""
    mixer = make("rala", grid)
    gh, gw = grid
    n, s = gh * gw, K**-0.5
    x = inputs(n, seed=2)
    q, k, v_BTD = projections(mixer, x)
    v = heads(v_BTD)
    out = np.zeros_like(v)
    for b in range(2):
        for h in range(H):
            pq, pk = elu1(q[b, h]), elu1(k[b, h])
            alpha = softmax(s * pk @ pq.mean(axis=0))
            kk = n * alpha[:, None] * pk
            den = pq @ kk.mean(axis=0) + 1e-6
            a = rope_ref(pq, gh, gw) @ rope_ref(kk, gh, gw).T / n / den[:, None]
            out[b, h] = a @ v[b, h]
    lepe = [conv_ref(f64(v_BTD[b]), f64(mixer.lepe.kernel[...]), gh, gw) for b in range(2)]
    y = (merge(out) + np.stack(lepe) + f64(mixer.lepe.bias[...])) * f64(mixer.gate(x))
    expect = mixer.proj(jnp.asarray(y, jnp.float32))
    assert rel_err(run(mixer, x), expect) < 1e-5


def grouped_ref(lin, x_BD):
    """A grouped 1 x 1 Conv1d as an explicit block-diagonal matrix."""
    w, groups = f64(lin.kernel[...]), lin.kernel.shape[0]
    gi, go = w.shape[1:]
    full = np.zeros((groups * gi, groups * go))
    for g in range(groups):
        full[g * gi : (g + 1) * gi, g * go : (g + 1) * go] = w[g]
    return x_BD @ full + f64(lin.bias[...])


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("kernel_func", ["identity", "exp"])
def test_inline_equals_its_injective_attention_matrix(grid, kernel_func):
    """InL_ij = (s/N) phi q_i.phi k_j - (s/N^2) sum_m phi q_i.phi k_m + 1/N (rows sum to 1);
    then + a 3 x 3 conv of v with taps predicted per image from mean(x), W_proj."""
    mixer = make("inline", grid, kernel_func=kernel_func)
    gh, gw = grid
    n, s = gh * gw, K**-0.5
    phi = (lambda y: y) if kernel_func == "identity" else (lambda y: np.exp(0.2 * y))
    x = inputs(n, seed=3)
    q, k, v_BTD = projections(mixer, x)
    v = heads(v_BTD)
    out = np.zeros_like(v)
    for b in range(2):
        for h in range(H):
            qk = phi(q[b, h]) @ phi(k[b, h]).T
            a = (s / n) * qk - (s / n**2) * qk.sum(axis=1, keepdims=True) + 1.0 / n
            np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-12)
            out[b, h] = a @ v[b, h]
    pre = grouped_ref(mixer.kernel_in, f64(x).mean(axis=1))
    hidden = 0.5 * pre * (1.0 + np.vectorize(math.erf)(pre / math.sqrt(2.0)))  # exact GELU
    taps = grouped_ref(mixer.kernel_out, hidden).reshape(2, H * K, 3, 3)  # channel c: 9c..9c+8
    local = [conv_ref(f64(v_BTD[b]), taps[b].transpose(1, 2, 0), gh, gw) for b in range(2)]
    expect = mixer.proj(jnp.asarray(merge(out) + np.stack(local), jnp.float32))
    assert rel_err(run(mixer, x), expect) < 1e-5


def interp_ref(table, size):
    """PyTorch linear interpolation (align_corners=False) along axis 0, one output at a time."""
    m = table.shape[0]
    out = []
    for i in range(size):
        src = max((i + 0.5) * m / size - 0.5, 0.0)
        lo = min(math.floor(src), m - 1)
        hi = min(lo + 1, m - 1)
        out.append((1 - (src - lo)) * table[lo] + (src - lo) * table[hi])
    return np.stack(out)


def pool_ref(q_TK, gh, gw, p):
    """AdaptiveAvgPool2d to p x p: bin i spans [floor(i g / p), ceil((i + 1) g / p))."""
    grid = q_TK.reshape(gh, gw, -1)
    agents = []
    for i in range(p):
        for j in range(p):
            r0, r1 = (i * gh) // p, math.ceil((i + 1) * gh / p)
            c0, c1 = (j * gw) // p, math.ceil((j + 1) * gw / p)
            agents.append(grid[r0:r1, c0:c1].mean(axis=(0, 1)))
    return np.stack(agents)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("agent_num", [4, 49])
def test_agent_equals_its_two_softmax_attention_matrix(grid, agent_num):
    """M = softmax_n(s Q A^T + B2) softmax_T(s A K^T + B1) (rows sum to 1), A = pooled Q;
    output M V + DWC(V), then W_proj. Biases are set large so their layout matters."""
    gh, gw = grid
    mixer = make("agent", grid, agent_num=agent_num, window=4)
    names = ("an_bias", "ah_bias", "aw_bias", "na_bias", "ha_bias", "wa_bias")
    for key, name in zip(jax.random.split(jax.random.key(7), 6), names, strict=True):
        param = getattr(mixer, name)
        param[...] = jax.random.normal(key, param.shape)
    n, s, p = gh * gw, K**-0.5, math.isqrt(agent_num)
    x = inputs(n, seed=4)
    q, k, v_BTD = projections(mixer, x)
    v = heads(v_BTD)

    def resize2(t77):  # [7, 7, ...] -> [gh, gw, ...]
        return interp_ref(interp_ref(t77, gh).swapaxes(0, 1), gw).swapaxes(0, 1)

    out = np.zeros_like(v)
    for h in range(H):
        an, na = f64(mixer.an_bias[...][h]), f64(mixer.na_bias[...][h])  # [n, 7, 7]
        rows1 = interp_ref(f64(mixer.ah_bias[...][h]).T, gh)  # [gh, n]
        cols1 = interp_ref(f64(mixer.aw_bias[...][h]).T, gw)  # [gw, n]
        b1 = resize2(an.transpose(1, 2, 0)) + rows1[:, None] + cols1[None, :]  # [gh, gw, n]
        rows2 = interp_ref(f64(mixer.ha_bias[...][h]), gh)
        cols2 = interp_ref(f64(mixer.wa_bias[...][h]), gw)
        b2 = resize2(na.transpose(1, 2, 0)) + rows2[:, None] + cols2[None, :]
        for b in range(2):
            agents = pool_ref(q[b, h], gh, gw, p)
            aggregate = softmax(s * agents @ k[b, h].T + b1.reshape(n, -1).T)  # [n_agents, T]
            broadcast = softmax(s * q[b, h] @ agents.T + b2.reshape(n, -1))  # [T, n_agents]
            m = broadcast @ aggregate
            np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-12)
            out[b, h] = m @ v[b, h]
    dwc = [conv_ref(f64(v_BTD[b]), f64(mixer.dwc.kernel[...]), gh, gw) for b in range(2)]
    y = merge(out) + np.stack(dwc) + f64(mixer.dwc.bias[...])
    expect = mixer.proj(jnp.asarray(y, jnp.float32))
    assert rel_err(run(mixer, x), expect) < 1e-5


@pytest.mark.parametrize(
    "name, options",
    [
        ("mala", dict(rope=False, lepe_size=0)),
        ("rala", dict(rope=False, lepe_size=0)),
        ("inline", dict(local_conv=False)),
    ],
)
def test_position_free_variants_are_permutation_equivariant(name, options):
    """Only RoPE and the convs see token positions: without them a shuffle commutes."""
    mixer = make(name, (4, 4), **options)
    x = inputs(16, seed=5)
    perm = jax.random.permutation(jax.random.key(6), 16)
    assert rel_err(run(mixer, x[:, perm]), run(mixer, x)[:, perm]) < 1e-5


@pytest.mark.parametrize("name", ["mala", "rala", "inline", "agent"])
def test_grid_and_option_errors(name):
    mixer = make(name, (4, 4))
    with pytest.raises(ValueError, match=f"mixer '{name}': T=12 is not a square"):
        mixer(inputs(12))
    with pytest.raises(ValueError, match=f"mixer '{name}': packed segments"):
        mixer(inputs(16), segment_ids=jnp.zeros((2, 16), jnp.int32))
    with pytest.raises(ValueError, match="do not fill a grid of 5 rows"):
        make(name, (5, 3))(inputs(16))
    with pytest.raises(ValueError, match="grid_height"):
        make(name, (4, 4), grid_height=-1)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("mala", dict(num_heads=16), "head dim divisible by 4"),  # head dim 2
        ("rala", dict(num_heads=16), "head dim divisible by 4"),
        ("mala", dict(lepe_size=4), "lepe_size must be 0 or odd"),
        ("inline", dict(kernel_func="softmax"), "kernel_func"),
        ("agent", dict(agent_num=10), "perfect square"),
        ("agent", dict(dwc_size=2), "dwc_size"),
    ],
)
def test_bad_options(name, options, message):
    with pytest.raises(ValueError, match=message):
        make(name, (4, 4), **options)
