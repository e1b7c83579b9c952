"""Generation: greedy decoding through prefill + recurrent steps equals the argmax of the full
forward on the growing sequence, for every causal mixer and hybrids (sliding windows included);
mixed prompt lengths equal each prompt alone; sampling is reproducible from its key; a restored
run generates what the in-memory model does; a cache too short is an error, never a wrong
answer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import linmix
from linmix.generate import generate, sample
from linmix.models import REGISTRY
from linmix.ops import checked
from linmix.testing.corpus import tiny_lm_config, write_corpus
from linmix.testing.models import SMALL, make
from linmix.testing.train import final_params
from linmix.train import loop
from linmix.train.checkpoint import to_nested

nnx.set_graph_mode(False)


def _greedy_by_full_forward(model, prompt: list[int], n: int) -> list[int]:
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(jnp.argmax(model(jnp.asarray([seq]))[0, -1])))
    return seq[len(prompt) :]


def _assert_greedy(model, prompt: list[int], new: list[int]) -> None:
    """Each generated token is the argmax of the full forward over the sequence before it: one
    forward over prompt + new gives every step's logits (the model is causal). A token may differ
    from the argmax only at a tie within float rounding of the two forms."""
    logits = np.asarray(model(jnp.asarray([prompt + new]))[0, len(prompt) - 1 : -1])
    for i, tok in enumerate(new):
        best = logits[i].max()
        assert tok == logits[i].argmax() or best - logits[i, tok] <= 1e-5 * abs(best), (i, tok)


CAUSAL = sorted(name for name, cls in REGISTRY.items() if cls.causal)
CASES = [(m, "L", {}) for m in CAUSAL] + [
    ("gla", "LA", {}),
    ("mamba", "LA", {}),
    ("gla", "CL", {}),  # BaseConv, then GLA: Zoology's recall model
    ("attention", "L", {"window": 4}),  # a 4-slot ring buffer, overwritten while decoding
]


@pytest.mark.parametrize("mixer, pattern, attention_options", CASES)
def test_greedy_generation_equals_the_full_forward(mixer, pattern, attention_options):
    model = make(
        mixer, layer_pattern=pattern, num_layers=2 * len(pattern), mixer_options=attention_options
    )
    prompts = [[3, 14, 15, 9, 2, 6, 5], [27, 18, 28]]  # different lengths
    got = generate(model, prompts, max_new_tokens=9)
    for prompt, new in zip(prompts, got, strict=True):
        assert len(new) == 9
        _assert_greedy(model, prompt, new)
    assert got == [generate(model, [p], max_new_tokens=9)[0] for p in prompts]


def test_sliding_window_decodes_past_its_ring_and_equals_the_full_forward():
    model = make("attention", mixer_options={"window": 5})
    cache = model.init_cache(1, 64)
    assert cache["layers"][0]["k"].shape[2] == 5  # [units, B, slots, G, K]: a ring of 5 slots
    assert int(cache["limit"]) == -1  # never full
    tokens = jax.random.randint(jax.random.key(0), (1, 23), 0, SMALL["vocab_size"])
    full = model(tokens)
    step_logits = []
    for start, stop in ((0, 7), (7, 8), (8, 16), (16, 17), (17, 23)):  # prefill + steps
        logits, cache = model(tokens[:, start:stop], cache=cache)
        step_logits.append(logits)
    np.testing.assert_allclose(jnp.concatenate(step_logits, 1), full, rtol=2e-5, atol=2e-5)


def test_decoding_past_the_cache_raises_eagerly_and_is_nan_under_jit():
    model = make("gla", layer_pattern="LA")
    cache = model.init_cache(1, 8)
    assert int(cache["limit"]) == 8
    _, cache = model(jnp.ones((1, 6), jnp.int32), cache=cache)
    with pytest.raises(ValueError, match="overflows the cache: position 6 of 8"):
        model(jnp.ones((1, 3), jnp.int32), cache=cache)
    decode = lambda m, t, c: m(t, cache=c)  # noqa: E731
    logits, _ = jax.jit(decode)(model, jnp.ones((1, 3), jnp.int32), cache)
    assert np.isnan(np.asarray(logits)).all()  # under plain jit: NaN, never a wrong answer
    with pytest.raises(ValueError, match="overflows the cache: position 6 of 8"):
        checked(decode)(model, jnp.ones((1, 3), jnp.int32), cache)  # jitted, with the checks
    logits, _ = checked(decode)(model, jnp.ones((1, 2), jnp.int32), cache)  # fits exactly
    assert np.isfinite(np.asarray(logits)).all()
    linear = make("gla")
    cache = linear.init_cache(1, 4)  # fixed-size states: no limit
    assert int(cache["limit"]) == -1
    logits, _ = linear(jnp.ones((1, 9), jnp.int32), cache=cache)
    assert np.isfinite(np.asarray(logits)).all()


def test_repeat_prompt_reads_the_prompt_twice_and_streams():
    model = make("gla")
    seen = []
    got = generate(model, [[4, 5, 6]], max_new_tokens=5, repeat_prompt=2, on_token=seen.append)
    assert got == generate(model, [[4, 5, 6, 4, 5, 6]], max_new_tokens=5)
    assert [int(s[0]) for s in seen] == got[0]
    with pytest.raises(ValueError, match="repeat_prompt"):
        generate(model, [[1]], max_new_tokens=1, repeat_prompt=0)


def test_sampling_is_reproducible_and_stops():
    model = make("gla")
    prompts = [[1, 2, 3], [4, 5, 6]]
    kw = dict(max_new_tokens=12, temperature=1.0, top_k=20, top_p=0.9)
    a = generate(model, prompts, key=jax.random.key(7), **kw)
    assert a == generate(model, prompts, key=jax.random.key(7), **kw)
    assert a != generate(model, prompts, key=jax.random.key(8), **kw)
    stop = a[0][3]
    cut = generate(model, prompts, key=jax.random.key(7), stop_tokens=[stop], **kw)
    assert cut[0] == a[0][: a[0].index(stop) + 1]


def test_sample_filters():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    keys = jax.random.split(jax.random.key(0), 400)
    top2 = {int(sample(logits, k, 1.0, 2, 1.0)[0]) for k in keys}
    assert top2 == {0, 1}
    nucleus = {int(sample(logits, k, 1.0, 0, 0.7)[0]) for k in keys}
    assert nucleus == {0, 1}  # 0.5 + 0.3 reaches 0.7
    assert int(sample(logits, keys[0], 0.0, 0, 1.0)[0]) == 0


def test_bad_generation_inputs():
    model = make("gla")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(model, [[1, SMALL["vocab_size"]]], max_new_tokens=2)
    with pytest.raises(ValueError, match="explicit PRNG key"):
        generate(model, [[1, 2]], max_new_tokens=2, temperature=1.0)
    with pytest.raises(ValueError, match="empty"):
        generate(model, [[]], max_new_tokens=2)


def test_restored_run_generates_like_the_trained_model(tmp_path):
    rng = np.random.default_rng(0)
    docs = [(rng.integers(64) + np.arange(n)) % 64 for n in rng.integers(5, 40, 40)]
    corpus = write_corpus(tmp_path / "corpus", docs[:36], docs[36:], vocab_size=64)
    config = tiny_lm_config(corpus, "gla", steps=4)
    config.model.vocab_size = 64
    loop.run(config, tmp_path / "run")
    model, restored_config, step, state = linmix.load(tmp_path / "run")
    assert step == 4 and restored_config.model.mixer == "gla" and state is None
    _, saved = final_params(tmp_path / "run")
    restored, written = to_nested(model), saved["model"]
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(written), strict=True):
        np.testing.assert_array_equal(a, b)
    assert generate(model, [[5, 6, 7, 8]], max_new_tokens=5) == [
        _greedy_by_full_forward(model, [5, 6, 7, 8], 5)
    ]
    with pytest.raises(FileNotFoundError, match="not a linmix run"):
        linmix.load(tmp_path / "nothing")
