"""Generation: greedy decoding through prefill + recurrent steps equals the argmax of the full
forward on the growing sequence; mixed prompt lengths equal each prompt alone; sampling is
reproducible from its key; a restored run generates what the in-memory model does."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linmix.generate import generate, load, sample
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


@pytest.mark.parametrize("mixer, pattern", [("gla", "L"), ("deltanet", "L"), ("mamba", "LA")])
def test_greedy_generation_equals_the_full_forward(mixer, pattern):
    model = make(mixer, layer_pattern=pattern, num_layers=2 * len(pattern))
    prompts = [[3, 14, 15, 9, 2, 6, 5], [27, 18, 28]]  # different lengths
    got = generate(model, prompts, max_new_tokens=6)
    for prompt, new in zip(prompts, got, strict=True):
        assert new == _greedy_by_full_forward(model, prompt, 6)
    assert got == [generate(model, [p], max_new_tokens=6)[0] for p in prompts]


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
    model, restored_config, step = load(tmp_path / "run")
    assert step == 4 and restored_config.model.mixer == "gla"
    _, saved = final_params(tmp_path / "run")
    restored, written = to_nested(model), saved["model"]
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(written), strict=True):
        np.testing.assert_array_equal(a, b)
    assert generate(model, [[5, 6, 7, 8]], max_new_tokens=5) == [
        _greedy_by_full_forward(model, [5, 6, 7, 8], 5)
    ]
    with pytest.raises(FileNotFoundError, match="not a linmix run"):
        load(tmp_path / "nothing")
