"""MAD sources: each task checked against its definition, determinism, splits, validation."""

import numpy as np
import pytest

from linmix.data.mad import MAD_TASKS, MADSource, make_mad_sources, validate_mad_args
from linmix.data.mqar import IGNORE_INDEX

N = 200
NEXT_TOKEN_TASKS = [t for t in MAD_TASKS if t != "selective_copying"]


def _examples(task: str, split: str = "train", n: int = N, seed: int = 0, **kw) -> list[dict]:
    src = MADSource(task, num_examples=max(n, 1), seed=seed, split=split, **kw)
    return [src[i] for i in range(n)]


def _cfg(task: str) -> dict:
    return MAD_TASKS[task]


# ------------------------------------------------------------------ all tasks


@pytest.mark.parametrize("task", sorted(MAD_TASKS))
def test_shape_dtype_vocab_determinism_and_splits(task):
    cfg = _cfg(task)
    train, test = make_mad_sources(task, seed=3)
    assert len(train) == cfg["num_train"] and len(test) == cfg["num_test"]
    tr = [train[i] for i in range(N)]
    te = [test[i] for i in range(N)]
    for ex in tr + te:
        assert set(ex) == {"inputs", "targets"}
        assert ex["inputs"].shape == ex["targets"].shape == (cfg["seq_len"],)
        assert ex["inputs"].dtype == ex["targets"].dtype == np.int32
        assert ex["inputs"].min() >= 0 and ex["inputs"].max() < cfg["vocab_size"]
        sup = ex["targets"][ex["targets"] != IGNORE_INDEX]
        assert sup.size > 0
        assert sup.min() >= 0 and sup.max() < cfg["vocab_size"]

    # Same (seed, split, idx) -> same example, from a fresh source and in any order.
    again, _ = make_mad_sources(task, seed=3)
    for i in (N - 1, 0, 17, np.int64(5)):
        a, b = tr[int(i)], again[i]
        assert np.array_equal(a["inputs"], b["inputs"])
        assert np.array_equal(a["targets"], b["targets"])
    other, _ = make_mad_sources(task, seed=4)
    assert any(not np.array_equal(tr[i]["inputs"], other[i]["inputs"]) for i in range(10))

    # No test input sequence also occurs in the train split.
    train_seqs = {ex["inputs"].tobytes() for ex in tr}
    assert not any(ex["inputs"].tobytes() in train_seqs for ex in te)


@pytest.mark.parametrize("task", NEXT_TOKEN_TASKS)
def test_next_token_form(task):
    for split in ("train", "test"):
        for ex in _examples(task, split, n=50):
            t = np.flatnonzero(ex["targets"] != IGNORE_INDEX)
            assert t.max() < ex["inputs"].shape[0] - 1 or task == "compression"
            t = t[t < ex["inputs"].shape[0] - 1]
            np.testing.assert_array_equal(ex["targets"][t], ex["inputs"][t + 1])


# ------------------------------------------------------------------ recall


def _check_recall(ex: dict, num_keys: int, clean: int) -> tuple[int, int]:
    """Scans the pairs of ``ex``; returns (#noise slots, #slots)."""
    x, y = ex["inputs"], ex["targets"]
    seen: dict[int, int] = {}
    noise_slots = 0
    expected = np.full_like(y, IGNORE_INDEX)
    for s in range(0, x.shape[0], 2):
        k, v = int(x[s]), int(x[s + 1])
        if k >= clean:  # a noise slot: two noise tokens
            assert v >= clean
            noise_slots += 1
            continue
        assert k < num_keys and num_keys <= v < clean
        if k in seen:
            assert seen[k] == v  # a key keeps its value within an example
            expected[s] = v
        seen[k] = v
    np.testing.assert_array_equal(y, expected)
    # The final pair always repeats an earlier key and is supervised.
    assert y[-2] != IGNORE_INDEX
    return noise_slots, x.shape[0] // 2


@pytest.mark.parametrize("split", ["train", "test"])
def test_in_context_recall_targets(split):
    v = _cfg("in_context_recall")["vocab_size"]
    for ex in _examples("in_context_recall", split):
        noise, _ = _check_recall(ex, num_keys=v // 2, clean=v)
        assert noise == 0


def test_noisy_in_context_recall_targets():
    cfg = _cfg("noisy_in_context_recall")
    clean = cfg["vocab_size"] - cfg["noise_vocab_size"]
    noise = slots = 0
    for split in ("train", "test"):
        for ex in _examples("noisy_in_context_recall", split):
            a, b = _check_recall(ex, num_keys=clean // 2, clean=clean)
            noise, slots = noise + a, slots + b
            assert np.all(ex["targets"][ex["inputs"] >= clean] == IGNORE_INDEX)
    # Body slots are noise with probability frac_noise (the probe slot never is).
    assert abs(noise / slots - cfg["frac_noise"]) < 0.03


def test_fuzzy_in_context_recall_targets():
    cfg = _cfg("fuzzy_in_context_recall")
    pad = cfg["vocab_size"] - 1
    num_keys = pad // 2
    total_supervised = 0
    for split in ("train", "test"):
        key_sizes = set()
        for ex in _examples("fuzzy_in_context_recall", split, n=100):
            x, y = ex["inputs"].tolist(), ex["targets"]
            start = 0
            while x[start] == pad:
                start += 1
            assert pad not in x[start:]
            # Split into maximal runs of key tokens and of value tokens.
            runs: list[tuple[bool, int, list[int]]] = []
            for p in range(start, len(x)):
                is_key = x[p] < num_keys
                if runs and runs[-1][0] == is_key:
                    runs[-1][2].append(x[p])
                else:
                    runs.append((is_key, p, [x[p]]))
            assert len(runs) % 2 == 0 and all(r[0] == (i % 2 == 0) for i, r in enumerate(runs))
            expected = np.full_like(y, IGNORE_INDEX)
            seen: dict[tuple, tuple] = {}
            for (_, _, key), (_, vpos, val) in zip(runs[0::2], runs[1::2], strict=True):
                assert 1 <= len(key) <= cfg["k_motif_size"] and len(set(key)) == len(key)
                assert 1 <= len(val) <= cfg["v_motif_size"] and len(set(val)) == len(val)
                key_sizes.add(len(key))
                if tuple(key) in seen:
                    assert seen[tuple(key)] == tuple(val)
                    expected[vpos - 1 : vpos - 1 + len(val)] = val
                seen[tuple(key)] = tuple(val)
            np.testing.assert_array_equal(y, expected)
            assert y[-2] != IGNORE_INDEX  # the final value is always a recall
            total_supervised += int((y != IGNORE_INDEX).sum())
        if split == "test":
            assert key_sizes == {cfg["k_motif_size"]}
        else:
            assert key_sizes == set(range(1, cfg["k_motif_size"] + 1))
    assert total_supervised > 200


# ------------------------------------------------------------------ copying, memorization


@pytest.mark.parametrize("split", ["train", "test"])
def test_selective_copying_targets(split):
    cfg = _cfg("selective_copying")
    n, v = cfg["num_tokens_to_copy"], cfg["vocab_size"]
    blank, copy = v - 2, v - 1
    for ex in _examples("selective_copying", split):
        x, y = ex["inputs"], ex["targets"]
        (copy_pos,) = np.flatnonzero(x == copy)
        assert copy_pos == x.shape[0] - n - 1
        data = x[:copy_pos][x[:copy_pos] != blank]
        assert data.shape == (n,)
        assert np.all(x[copy_pos + 1 :] == blank)
        supervised = np.flatnonzero(y != IGNORE_INDEX)
        np.testing.assert_array_equal(supervised, np.arange(copy_pos + 1, x.shape[0]))
        np.testing.assert_array_equal(y[supervised], data)


def _pairs(ex: dict) -> list[tuple[int, int]]:
    x = ex["inputs"]
    return list(zip(x[0::2].tolist(), x[1::2].tolist(), strict=True))


def test_memorization_fixed_dictionary():
    v = _cfg("memorization")["vocab_size"]
    mapping: dict[int, int] = {}
    for split in ("train", "test"):
        for ex in _examples("memorization", split, seed=5):
            keys = [k for k, _ in _pairs(ex)]
            assert len(set(keys)) == len(keys)  # nothing to recall from context
            for k, val in _pairs(ex):
                assert 0 <= k < v // 2 <= val < v
                assert mapping.setdefault(k, val) == val
            y = ex["targets"]
            np.testing.assert_array_equal(y[0::2], ex["inputs"][1::2])
            assert np.all(y[1::2] == IGNORE_INDEX)
    assert len(mapping) == v // 2  # every key was seen, and the map is a bijection
    assert len(set(mapping.values())) == v // 2
    other = {k: val for ex in _examples("memorization", n=50, seed=6) for k, val in _pairs(ex)}
    assert any(mapping[k] != val for k, val in other.items())


# ------------------------------------------------------------------ compression


@pytest.mark.parametrize("split", ["train", "test"])
def test_compression_reconstruction(split):
    cfg = _cfg("compression")
    half, comp = cfg["seq_len"] // 2, cfg["vocab_size"] - 1
    for ex in _examples("compression", split):
        x, y = ex["inputs"], ex["targets"]
        assert np.flatnonzero(x == comp).tolist() == [half]
        assert np.all(y[:half] == IGNORE_INDEX)
        np.testing.assert_array_equal(y[half:], x[:half])  # the reconstruction is the prefix
        np.testing.assert_array_equal(x[half + 1 :], x[: half - 1])


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("task", "kwargs", "match"),
    [
        ("nope", dict(vocab_size=16, seq_len=128), "task must be one of"),
        ("in_context_recall", dict(vocab_size=16, seq_len=128, frac_noise=0.2), "unknown"),
        ("in_context_recall", dict(vocab_size=16), "seq_len is required"),
        ("in_context_recall", dict(vocab_size=16, seq_len=127), "seq_len must be even"),
        ("in_context_recall", dict(vocab_size=1, seq_len=128), "vocab_size - noise_vocab_size"),
        (
            "noisy_in_context_recall",
            dict(vocab_size=32, seq_len=128, noise_vocab_size=16, frac_noise=1.0),
            "frac_noise",
        ),
        (
            "noisy_in_context_recall",
            dict(vocab_size=32, seq_len=128, noise_vocab_size=0, frac_noise=0.2),
            "noise_vocab_size must be > 0",
        ),
        ("fuzzy_in_context_recall", dict(vocab_size=6, seq_len=128), "too few"),
        ("fuzzy_in_context_recall", dict(vocab_size=16, seq_len=11), "seq_len must be >="),
        ("fuzzy_in_context_recall", dict(vocab_size=16, seq_len=128, k_motif_size=0), "k_motif"),
        ("selective_copying", dict(vocab_size=2, seq_len=256), "vocab_size must be >= 3"),
        ("selective_copying", dict(vocab_size=16, seq_len=33), "seq_len must be >"),
        ("memorization", dict(vocab_size=255, seq_len=32), "vocab_size must be even"),
        ("memorization", dict(vocab_size=16, seq_len=32), "distinct keys"),
        ("compression", dict(vocab_size=16, seq_len=31), "seq_len must be even"),
    ],
)
def test_validate_mad_args_raises(task, kwargs, match):
    with pytest.raises(ValueError, match=match):
        validate_mad_args(task, **kwargs)


def test_baselines_are_valid_and_source_args_checked():
    for task, cfg in MAD_TASKS.items():
        validate_mad_args(task, **{k: v for k, v in cfg.items() if not k.startswith("num_")})
    with pytest.raises(ValueError, match="split"):
        MADSource("compression", 10, 0, split="val")
    with pytest.raises(ValueError, match="seed"):
        MADSource("compression", 10, -1)
    with pytest.raises(ValueError, match="num_examples"):
        MADSource("compression", 0, 0)
    with pytest.raises(ValueError, match="seq_len must be even"):
        MADSource("compression", 10, 0, seq_len=33)
    src = MADSource("compression", 10, 0, seq_len=16)
    assert src[0]["inputs"].shape == (16,)
    with pytest.raises(IndexError):
        src[10]
    with pytest.raises(TypeError):
        src[1.0]
