"""Every registered mixer against the call contract (`mixers/base.py`).

Causal mixers: causality by gradient, chunked == prefill + step-by-step decode with the cache, no
state leak across packed segments, remat equality, bf16, clear errors. Bidirectional mixers:
shapes and dtypes, and permutation behaviour as the class declares it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linmix.models import REGISTRY, ModelConfig

nnx.set_graph_mode(False)

BASE = dict(vocab_size=64, d_model=32, num_layers=1, num_heads=2, mlp_ratio=0.0, chunk_size=8)
CAUSAL = sorted(n for n, c in REGISTRY.items() if c.causal)
BIDIRECTIONAL = sorted(n for n, c in REGISTRY.items() if not c.causal)
# Variants that exercise optional cached pieces (conv tails, windows, denominators).
VARIANTS = {
    "attention+window+conv": ("attention", {"window": 5, "use_short_conv": True}),
    "gla+conv": ("gla", {"use_short_conv": True}),
    "retnet+conv": ("retnet", {"use_short_conv": True}),
    "linear_attn+denominator": ("linear_attn", {"normalization": "denominator"}),
}
CASES = {**{n: (n, {}) for n in CAUSAL}, **VARIANTS}


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def make(name: str, options: dict | None = None, **kw):
    cfg = ModelConfig(**{**BASE, "mixer": name, "mixer_options": options or {}, **kw})
    return REGISTRY[name](cfg, rngs=nnx.Rngs(0))


def inputs(shape, seed=1, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape).astype(dtype)


@pytest.mark.parametrize("case", sorted(CASES))
def test_causal_by_gradient(case):
    """d y_t / d x_s is exactly zero for every s > t, and not for every s <= t."""
    mixer = make(*CASES[case])
    x = inputs((1, 21, BASE["d_model"]))
    positions = (0, 7, 8, 20)

    @jax.jit
    def grads(m, x):
        # One backward pass per probed output position, vmapped: a single compile.
        y, pullback = jax.vjp(lambda x: m(x)[0], x)
        cts = jnp.stack([jnp.zeros_like(y).at[0, p].set(1.0) for p in positions])
        return jax.vmap(lambda ct: pullback(ct)[0])(cts)

    for g, pos in zip(grads(mixer, x), positions, strict=True):
        assert jnp.all(g[0, pos + 1 :] == 0), f"{case}: output {pos} depends on the future"
        assert jnp.any(g[0, : pos + 1] != 0), f"{case}: output {pos} ignores the past"


@pytest.mark.parametrize("case", sorted(CASES))
def test_decode_matches_chunked(case):
    """Prefill 7 tokens, then decode one token at a time: the whole-sequence outputs."""
    mixer = make(*CASES[case])
    x = inputs((2, 19, BASE["d_model"]))
    full, none = mixer(x)
    assert none is None
    step = jax.jit(lambda m, x, c: m(x, cache=c))
    cache = mixer.init_cache(2, 19)
    y, cache = step(mixer, x[:, :7], cache)
    ys = [y]
    for t in range(7, 19):
        y, cache = step(mixer, x[:, t : t + 1], cache)
        ys.append(y)
    assert int(cache["pos"]) == 19
    assert rel_err(jnp.concatenate(ys, axis=1), full) < 1e-5


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_leak_across_segments(case):
    """A packed row gives each document the outputs it gets alone."""
    mixer = make(*CASES[case])
    a, b = inputs((1, 11, BASE["d_model"]), 2), inputs((1, 14, BASE["d_model"]), 3)
    seg = jnp.concatenate([jnp.zeros((1, 11), jnp.int32), jnp.ones((1, 14), jnp.int32)], axis=1)
    run = jax.jit(lambda m, x, seg: m(x, segment_ids=seg)[0])
    packed = run(mixer, jnp.concatenate([a, b], axis=1), seg)
    assert rel_err(packed[:, :11], run(mixer, a, None)) < 1e-5
    assert rel_err(packed[:, 11:], run(mixer, b, None)) < 1e-5


@pytest.mark.parametrize("case", sorted(CASES))
def test_remat_equality(case):
    """Rematerialising the mixer changes no gradient (parameters and inputs)."""
    mixer = make(*CASES[case])
    x = inputs((2, 13, BASE["d_model"]))

    def loss(m, x):
        return jnp.square(m(x)[0]).mean()

    plain = jax.jit(jax.grad(loss, argnums=(0, 1)))(mixer, x)
    remat = jax.jit(jax.grad(jax.checkpoint(loss), argnums=(0, 1)))(mixer, x)
    for p, r in zip(jax.tree.leaves(plain), jax.tree.leaves(remat), strict=True):
        np.testing.assert_allclose(r, p, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bfloat16_close_to_float32(case):
    name, options = CASES[case]
    x = inputs((2, 13, BASE["d_model"]))
    run = jax.jit(lambda m, x: m(x)[0])
    y32 = run(make(name, options), x)
    y16 = run(make(name, options, dtype="bfloat16"), x.astype(jnp.bfloat16))
    assert y16.shape == y32.shape and jnp.all(jnp.isfinite(y16.astype(jnp.float32)))
    assert rel_err(y16, y32) < 5e-2


@pytest.mark.parametrize("name", CAUSAL)
def test_contract_errors(name):
    mixer = make(name)
    x = inputs((1, 5, BASE["d_model"]))
    with pytest.raises(ValueError, match="segment_ids cannot be used with a cache"):
        mixer(x, segment_ids=jnp.zeros((1, 5), jnp.int32), cache=mixer.init_cache(1, 5))
    with pytest.raises(ValueError, match=r"\[B, T, D\]"):
        mixer(x[0])


@pytest.mark.parametrize("name", BIDIRECTIONAL)
def test_bidirectional_shapes_and_permutation(name):
    """Output shape and dtype; a mixer declaring itself permutation-equivariant commutes with a
    shuffle of the tokens, and one with positional structure (windows, convs) does not."""
    mixer = make(name, causal=False)
    x = inputs((2, 16, BASE["d_model"]))
    y, cache = mixer(x)
    assert y.shape == x.shape and y.dtype == jnp.float32 and cache is None
    assert jnp.all(jnp.isfinite(y))
    perm = jax.random.permutation(jax.random.key(5), 16)
    y_perm, _ = mixer(x[:, perm])
    equal = rel_err(y_perm, y[:, perm]) < 1e-5
    assert equal == REGISTRY[name].permutation_equivariant, name
    y16, _ = make(name, causal=False, dtype="bfloat16")(x.astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16 and rel_err(y16, y) < 5e-2
    with pytest.raises(ValueError, match="not causal"):
        mixer.init_cache(2, 16)


@pytest.mark.parametrize("name", BIDIRECTIONAL)
def test_bidirectional_mixers_refused_by_the_causal_lm(name):
    with pytest.raises(ValueError, match="not causal"):
        ModelConfig(**{**BASE, "mixer": name})
