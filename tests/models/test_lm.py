"""Model tests: causality by gradient, no leak across packed segments, remat, hybrids, configs."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linmix.models import LM, REGISTRY, ModelConfig
from linmix.testing.models import SMALL, make

nnx.set_graph_mode(False)

# One causal mixer per engine / form: the LM plumbing (scanned units, segments through blocks) is
# what these tests check; every mixer itself is held to the same properties in test_mixers.py.
MIXERS = ["alrnn", "attention", "deltanet", "gla", "lssl", "mamba"]


def embed_fn(model: LM):
    """Logits as a function of the input embeddings, so gradients w.r.t. inputs exist."""

    def f(x_BTD, segment_ids=None):
        h = x_BTD
        for i in range(model.units.blocks[0].norm1.scale.shape[0]):
            unit = jax.tree.map(lambda a, i=i: a[i], model.units)
            h, _ = unit(h, segment_ids)
        return model.logits(model.norm(h))

    return f


@pytest.mark.parametrize("mixer", MIXERS)
def test_causal_by_gradient(mixer):
    """d logits_t / d x_s is exactly zero for every s > t."""
    model = make(mixer)
    t = 37  # not a multiple of the chunk
    x = jax.random.normal(jax.random.key(1), (1, t, SMALL["d_model"]))
    f = embed_fn(model)
    positions = (0, 15, 16, 36)

    @jax.jit
    def grads(x):
        # One backward pass per probed position, vmapped: a single compile.
        y, pullback = jax.vjp(f, x)
        cts = jnp.stack([jnp.zeros_like(y).at[0, p].set(1.0) for p in positions])
        return jax.vmap(lambda ct: pullback(ct)[0])(cts)

    for g, pos in zip(grads(x), positions, strict=True):
        assert jnp.all(g[0, pos + 1 :] == 0), f"{mixer}: output {pos} depends on the future"
        assert jnp.any(g[0, : pos + 1] != 0), f"{mixer}: output {pos} ignores the past"


@pytest.mark.parametrize("mixer", MIXERS)
def test_scanned_forward_matches_unrolled(mixer):
    model = make(mixer)
    tokens = jax.random.randint(jax.random.key(2), (2, 21), 0, SMALL["vocab_size"])
    ref = np.asarray(embed_fn(model)(model.embed(tokens)), np.float64)
    out = np.asarray(model(tokens), np.float64)
    # The two programs fuse and order fp32 sums differently, so they agree to rounding, which
    # mixers with a normalised output (the delta rule's) amplify to ~2e-6 of the logits' norm;
    # a wrong layer slice or order is an O(1) difference.
    assert np.linalg.norm(out - ref) <= 1e-5 * np.linalg.norm(ref)


@pytest.mark.parametrize("mixer", MIXERS)
def test_no_leak_across_segments(mixer):
    """A packed row gives each document the logits it gets alone (positions restart too)."""
    model = make(mixer, mlp_ratio=0.0)
    key_a, key_b = jax.random.split(jax.random.key(3))
    doc_a = jax.random.randint(key_a, (1, 19), 0, SMALL["vocab_size"])
    doc_b = jax.random.randint(key_b, (1, 26), 0, SMALL["vocab_size"])
    packed = jnp.concatenate([doc_a, doc_b], axis=1)
    seg = jnp.concatenate([jnp.zeros((1, 19), jnp.int32), jnp.ones((1, 26), jnp.int32)], axis=1)
    out = model(packed, segment_ids=seg)
    np.testing.assert_allclose(out[:, :19], model(doc_a), rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(out[:, 19:], model(doc_b), rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_equality(remat):
    tokens = jax.random.randint(jax.random.key(4), (2, 24), 0, SMALL["vocab_size"])
    grads = []
    for policy in ("none", remat):
        model = make("gla", remat=policy)
        grads.append(jax.grad(lambda m: jnp.square(m(tokens)).mean())(model))
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("mixer", "pattern"), [("gla", "LA"), ("mamba", "LLLA")])
def test_hybrid_pattern_builds_units(mixer, pattern):
    model = make(mixer, num_layers=2 * len(pattern), layer_pattern=pattern)
    blocks = model.units.blocks
    names = [REGISTRY[mixer].__name__ if c == "L" else "Attention" for c in pattern]
    assert [type(b.mixer).__name__ for b in blocks] == names
    assert blocks[0].norm1.scale.shape == (2, SMALL["d_model"])  # 2 units stacked
    tokens = jnp.zeros((1, 8), jnp.int32)
    assert model(tokens).shape == (1, 8, SMALL["vocab_size"])


def test_bf16_compute_keeps_fp32_params_and_logits():
    model = make("retnet", dtype="bfloat16")
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(model))
    out = model(jnp.ones((1, 9), jnp.int32))
    assert out.dtype == jnp.float32 and bool(jnp.isfinite(out).all())


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(mixer="nope"), "unknown mixer"),
        (dict(num_layers=3, layer_pattern="LA"), "multiple of the layer_pattern"),
        (dict(layer_pattern="LX"), "layer_pattern"),
        (dict(num_heads=3), "heads"),
        (dict(chunk_size=24), "power of two"),
        (dict(mixer="gla", mixer_options={"expand_q": 1}), "unknown option"),
        (dict(mixer="linear_attn", mixer_options={"feature_map": "tanh"}), "feature_map"),
        (dict(dtype="float16"), "dtype"),
    ],
)
def test_bad_config_raises(kw, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{**SMALL, **kw})


def test_mixer_options_reach_the_module():
    cfg = ModelConfig(**{**SMALL, "mixer": "gla", "mixer_options": {"use_short_conv": True}})
    model = LM(cfg, rngs=nnx.Rngs(0))
    assert model.units.blocks[0].mixer.qkv.convs is not None
    assert dataclasses.asdict(REGISTRY["gla"].options_from(cfg))["use_short_conv"] is True


@pytest.mark.parametrize(
    "mixer, pattern", [*((m, "L") for m in MIXERS), ("gated_deltanet", "LA"), ("mamba2", "LLA")]
)
def test_prefill_then_decode_equals_the_full_forward(mixer, pattern):
    """The LM's cache over all layers: a prompt through the chunked form, then one token at a time
    through the recurrent steps, gives the full forward's logits (hybrids: attention's KV cache
    beside the linear mixers' states)."""
    layers = 2 * len(pattern)
    model = make(mixer, layer_pattern=pattern, num_layers=layers)
    tokens = jax.random.randint(jax.random.key(2), (2, 21), 0, SMALL["vocab_size"])
    full = model(tokens)
    step = jax.jit(lambda m, x, c: m(x, cache=c))
    cache = model.init_cache(2, 24)
    logits, cache = step(model, tokens[:, :13], cache)  # prefill: not a multiple of the chunk
    outs = [logits]
    for t in range(13, 21):
        logits, cache = step(model, tokens[:, t : t + 1], cache)
        outs.append(logits)
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=2e-5, rtol=2e-5)
    with pytest.raises(ValueError, match="segment_ids cannot be used with a cache"):
        model(tokens, segment_ids=jnp.zeros_like(tokens), cache=model.init_cache(2, 24))
