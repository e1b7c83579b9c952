"""MQAR source: determinism, split separation, semantics checked from the spec, validation."""

import time

import numpy as np
import pytest

from linmix.data import IGNORE_INDEX, MQARSource, make_mqar_sources

V, T, N = 256, 128, 8


def _source(**kw) -> MQARSource:
    args = dict(vocab_size=V, seq_len=T, num_kv_pairs=N, num_examples=1000, seed=0)
    args.update(kw)
    return MQARSource(**args)


def _same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in ("inputs", "targets"))


def check_example(ex: dict, *, vocab: int, seq_len: int, n: int, passes: int, noise: bool) -> None:
    """Checks one example against the MQAR spec without using generator internals."""
    inputs, targets = ex["inputs"], ex["targets"]
    assert inputs.shape == targets.shape == (seq_len,)
    assert inputs.dtype == targets.dtype == np.int32
    assert inputs.min() >= 0 and inputs.max() < vocab

    # Context: k1 v1 ... kN vN, with distinct keys in [1, V/2) and distinct values in [V/2, V).
    ctx_len = 2 * n
    context = inputs[:ctx_len]
    keys, values = context[0::2], context[1::2]
    assert np.all((keys >= 1) & (keys < vocab // 2))
    assert np.all((values >= vocab // 2) & (values < vocab))
    assert len(set(keys.tolist())) == n and len(set(values.tolist())) == n
    for p in range(1, passes):
        np.testing.assert_array_equal(inputs[p * ctx_len : (p + 1) * ctx_len], context)
    query_start = ctx_len * passes
    assert np.all(targets[:query_start] == IGNORE_INDEX)

    # Exactly N supervised positions, all in the query region at even offsets.
    supervised = np.flatnonzero(targets != IGNORE_INDEX)
    assert len(supervised) == n
    assert np.all(supervised >= query_start)
    assert np.all((supervised - query_start) % 2 == 0)

    # Each supervised position holds a key and targets the value that followed it.
    value_of = dict(zip(keys.tolist(), values.tolist(), strict=True))
    queried = inputs[supervised].tolist()
    assert sorted(queried) == sorted(keys.tolist())  # every key queried exactly once
    for pos in supervised:
        assert targets[pos] == value_of[int(inputs[pos])]

    others = np.ones(seq_len, dtype=bool)
    others[:query_start] = False
    others[supervised] = False
    if not noise:
        assert np.all(inputs[others] == 0)


@pytest.mark.parametrize(
    "passes, noise, seq_len, n",
    [(1, False, T, N), (2, False, T, N), (1, True, T, N), (3, True, 64, 4), (1, False, 16, 4)],
)
def test_semantics(passes, noise, seq_len, n):
    src = _source(seq_len=seq_len, num_kv_pairs=n, num_passes=passes, random_non_queries=noise)
    for i in range(100):
        check_example(src[i], vocab=V, seq_len=seq_len, n=n, passes=passes, noise=noise)


def test_random_non_queries_fill_query_region():
    ex = _source(random_non_queries=True)[0]
    region = ex["inputs"][2 * N :]
    unsupervised = ex["targets"][2 * N :] == IGNORE_INDEX
    # ~112 uniform tokens from [0, 256): a handful of zeros at most.
    assert np.mean(region[unsupervised] == 0) < 0.1
    assert len(np.unique(region[unsupervised])) > 50


def test_num_passes_tiles_context():
    ex = _source(num_passes=2)[5]
    np.testing.assert_array_equal(ex["inputs"][: 2 * N], ex["inputs"][2 * N : 4 * N])


def test_power_law_prefers_small_gaps():
    # Long query region so that the power law is clearly visible against uniform.
    seq_len, n = 512, 4
    src = _source(seq_len=seq_len, num_kv_pairs=n, vocab_size=1024)
    space = (seq_len - 2 * n) // 2
    gaps = []
    for i in range(500):
        sup = np.flatnonzero(src[i]["targets"] != IGNORE_INDEX)
        gaps.extend(((sup - 2 * n) // 2).tolist())
    gaps = np.array(gaps)
    assert gaps.min() >= 0 and gaps.max() < space
    # Uniform sampling would give a mean near space/2 = 126 and ~1% in the first 3 slots;
    # with p_i ∝ i^(-0.99) the first slot alone carries ~16% of the mass.
    assert gaps.mean() < space / 4
    assert np.mean(gaps < 3) > 0.2


def test_deterministic_and_order_independent():
    a, b = _source(), _source()
    forward = [a[i] for i in range(50)]
    backward = [b[i] for i in reversed(range(50))][::-1]
    for x, y in zip(forward, backward, strict=True):
        assert _same(x, y)
    assert _same(a[np.int64(7)], a[7])  # grain may index with numpy integers


def test_different_indices_and_seeds_differ():
    src = _source()
    examples = [src[i] for i in range(200)]
    rows = {ex["inputs"].tobytes() for ex in examples}
    assert len(rows) == 200
    assert not _same(_source(seed=1)[0], src[0])


def test_train_and_test_never_share_examples():
    train, test = make_mqar_sources(V, T, N, num_train=200, num_test=200, seed=0)
    assert len(train) == len(test) == 200
    train_rows = {train[i]["inputs"].tobytes() for i in range(200)}
    test_rows = {test[i]["inputs"].tobytes() for i in range(200)}
    assert not train_rows & test_rows


def test_make_mqar_sources_forwards_kwargs():
    train, test = make_mqar_sources(V, T, N, 10, 10, seed=3, num_passes=2, random_non_queries=True)
    for src in (train, test):
        assert src.num_passes == 2 and src.random_non_queries
        check_example(src[0], vocab=V, seq_len=T, n=N, passes=2, noise=True)


def test_index_out_of_range():
    src = _source(num_examples=10)
    with pytest.raises(IndexError):
        src[10]


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(seq_len=127), "seq_len must be even"),
        (dict(vocab_size=128), "vocab_size must be > seq_len"),
        (dict(vocab_size=100), "vocab_size must be > seq_len"),
        (dict(vocab_size=257), "vocab_size must be even"),
        (dict(num_kv_pairs=33), "Too many key-value pairs"),
        (dict(num_kv_pairs=16, num_passes=4), "Too many key-value pairs"),
        (dict(num_kv_pairs=0), "num_kv_pairs must be >= 1"),
        (dict(num_passes=0), "num_passes must be >= 1"),
        (dict(power_a=0.0), "power_a must be > 0"),
        (dict(num_examples=0), "num_examples must be >= 1"),
        (dict(seed=-1), "seed must be >= 0"),
        (dict(split="val"), "split must be one of"),
    ],
)
def test_validation_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        _source(**kw)


def test_boundary_config_is_valid():
    # 2N*passes + 2N == T exactly: the query region has exactly N slots, all used.
    src = _source(seq_len=32, num_kv_pairs=4, num_passes=3)
    ex = src[0]
    check_example(ex, vocab=V, seq_len=32, n=4, passes=3, noise=False)
    assert np.all(ex["targets"][24::2] != IGNORE_INDEX)


def test_generation_speed():
    """Not a timed assert: reports the per-example cost training pays on CPU."""
    src = _source(vocab_size=8192, seq_len=512, num_kv_pairs=64, num_examples=10_000)
    src[0]  # warm caches
    start = time.perf_counter()
    for i in range(64):
        src[i]
    elapsed = time.perf_counter() - start
    print(
        f"\nMQAR: 64 examples (T=512, N=64) in {elapsed * 1e3:.2f} ms "
        f"({elapsed / 64 * 1e6:.1f} us/example)"
    )
