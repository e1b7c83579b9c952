"""SEA specifics: the top-k budget and causal cell resize keep about k keys per row, every cell
kept is plain causal attention, the sparse path (k < T) keeps the call contract and departs
from dense attention only after k keys, and the distillation loss trains the estimator."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linmix.models import ModelConfig
from linmix.models.mixers.sea import SEA, cell_of, select_cells, sparse_attention
from linmix.ops.attention import attention

nnx.set_graph_mode(False)

BASE = dict(vocab_size=64, d_model=32, num_layers=1, num_heads=2, mlp_ratio=0.0, chunk_size=8)
SMALL = {"k": 3, "predictor_length": 8}  # rows past 3 keys are sparse


def make(options=None, **kw) -> SEA:
    cfg = ModelConfig(**{**BASE, "mixer": "sea", "mixer_options": options or {}, **kw})
    return SEA(cfg, rngs=nnx.Rngs(0))


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def normal(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape)


def check_contract(m, d: int) -> jax.Array:
    """Causal by gradient, prefill + decode == whole sequence, no leak across packed segments
    (jitted: eager op-by-op dispatch is several times slower here). Returns the outputs."""
    fwd = jax.jit(lambda m, x, seg: m(x, segment_ids=seg)[0])
    x = normal(1, (2, 17, d))
    full = fwd(m, x, None)
    grad = jax.jit(jax.grad(lambda x, pos: jnp.take(fwd(m, x, None)[0], pos, axis=0).sum()))
    for pos in (0, 5, 16):
        g = grad(x, pos)
        assert jnp.all(g[0, pos + 1 :] == 0) and jnp.any(g[0, : pos + 1] != 0)
    step = jax.jit(lambda m, x, c: m(x, cache=c))
    y, cache = step(m, x[:, :6], m.init_cache(2, 17))
    ys = [y]
    for t in range(6, 17):
        y, cache = step(m, x[:, t : t + 1], cache)
        ys.append(y)
    assert rel_err(jnp.concatenate(ys, 1), full) < 1e-5
    seg = jnp.broadcast_to((jnp.arange(17) >= 7).astype(jnp.int32), (2, 17))
    packed = fwd(m, x, seg)
    assert rel_err(packed[:, :7], fwd(m, x[:, :7], None)) < 1e-5
    assert rel_err(packed[:, 7:], fwd(m, x[:, 7:], None)) < 1e-5
    return full


@pytest.mark.parametrize("grouped", [False, True])
def test_budget_and_resize_keep_about_k_keys(grouped):
    """Row t keeps round(k M / (t+1)) cells per head (summed over heads when grouped); each cell
    holds floor or ceil of (t+1)/M keys, so a row attends to about k keys."""
    b, t, h, m, k = 1, 64, 3, 8, 8
    pos = jnp.broadcast_to(jnp.arange(t), (b, t))
    sel = select_cells(jax.nn.softmax(normal(1, (b, t, h, m)), -1), pos, k, grouped)
    cells = np.clip(np.round(k * m / (np.arange(t) + 1.0)), 1, m)
    if grouped:
        np.testing.assert_array_equal(np.asarray(sel.sum(axis=(2, 3)))[0], h * cells)
        return
    np.testing.assert_array_equal(np.asarray(sel.sum(-1))[0], np.repeat(cells[:, None], h, 1))
    cell = np.asarray(cell_of(pos, pos, m))[0]  # [T, S]
    for row in range(k, t):
        kept = np.asarray(sel)[0, row, :, cell[row, : row + 1]].sum(0)  # keys per head
        size = (row + 1) / m
        assert np.all(kept >= cells[row] * np.floor(size)) and np.all(
            kept <= cells[row] * np.ceil(size)
        )


def test_all_cells_kept_is_causal_attention():
    q, k, v = normal(1, (2, 11, 2, 8)), normal(2, (2, 11, 2, 8)), normal(3, (2, 11, 2, 5))
    pos = jnp.broadcast_to(jnp.arange(11), (2, 11))
    sel = jnp.ones((2, 11, 2, 4), bool)
    tril = jnp.tril(jnp.ones((11, 11), bool))[None]
    o = sparse_attention(q, k, v, sel, pos, pos, tril, jnp.eye(11, dtype=bool)[None])
    assert rel_err(o, attention(q, k, v, causal=True, implementation="reference")) < 1e-5


def test_sparse_path_keeps_the_contract_and_departs_from_dense():
    m, dense = make(SMALL), make({**SMALL, "k": 64})
    full = check_contract(m, BASE["d_model"])
    x = normal(1, (2, 17, BASE["d_model"]))
    ref = jax.jit(lambda m, x: m(x)[0])(dense, x)
    # Rows with at most k keys keep every cell; later rows drop some keys.
    np.testing.assert_allclose(full[:, :3], ref[:, :3], rtol=1e-5, atol=1e-6)
    assert rel_err(full[:, 3:], ref[:, 3:]) > 1e-3


def test_distill_loss_trains_the_estimator():
    """The output ignores the estimator's gradient (top-k); the distillation loss reaches it."""
    m = make(SMALL)
    x = normal(1, (1, 12, BASE["d_model"]))
    g = jax.jit(jax.grad(lambda m: jnp.square(m(x)[0]).sum()))(m)
    assert jnp.all(g.dec.kernel[...] == 0)
    loss, gd = jax.jit(jax.value_and_grad(lambda m: m.distill_loss(x)))(m)
    assert jnp.isfinite(loss) and loss > 0 and jnp.any(gd.dec.kernel[...] != 0)


@pytest.mark.parametrize("field", ["k", "predictor_length"])
def test_bad_options_name_the_field(field):
    with pytest.raises(ValueError, match=f"sea.*{field}"):
        make({field: 0})
