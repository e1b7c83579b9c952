"""Language-model rows from a prepared corpus: packing, positions, segments, coverage, sharding."""

import collections
import pickle

import numpy as np
import pytest

from linmix.data import IGNORE_INDEX, eval_batches, train_iterator
from linmix.data.lm import PackedSource, pack_index
from linmix.testing.corpus import random_documents, write_corpus

T = 16
# Awkward lengths: one token (nothing to predict), exactly T + 1 (one full row), longer than
# several rows, and short documents that pack together.
LENGTHS = [5, 1, T + 1, 3 * T + 7, 2, 9, T, 40, 4, 4, 4, 2 * T + 1, 13]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    train = random_documents(rng, LENGTHS)
    valid = random_documents(rng, [7, 30])
    return write_corpus(tmp_path_factory.mktemp("corpus"), train, valid), train


def _targets_by_document(source, docs):
    """(document, token index) of every target in every row, checking each row's layout."""
    seen = []
    for r in range(len(source)):
        row = source[r]
        seg, pos, inp, tgt = row["segment_ids"], row["positions"], row["inputs"], row["targets"]
        pad = seg == 0
        assert np.all(tgt[pad] == IGNORE_INDEX) and np.all(row["target_bytes"][pad] == 0)
        assert not np.any(np.diff(pad.astype(int)) < 0), "padding only at the end of a row"
        real = np.flatnonzero(~pad)
        assert np.all(np.diff(seg[real]) >= 0) and (len(real) == 0 or seg[real[0]] == 1)
        for s in np.unique(seg[real]):
            (at,) = np.nonzero(seg == s)
            assert np.all(np.diff(at) == 1), "a segment is contiguous"
            np.testing.assert_array_equal(pos[at], np.arange(len(at)))  # restarts per segment
            # The segment is a window of one document: find it from its inputs and targets.
            window = np.concatenate([inp[at], tgt[at][-1:]])
            found = [
                (d, i)
                for d, doc in enumerate(docs)
                for i in range(len(doc) - len(window) + 1)
                if np.array_equal(doc[i : i + len(window)], window)
            ]
            assert found, "every segment is a contiguous window of one document"
            d, i = found[0]
            seen += [(d, i + 1 + j) for j in range(len(at))]
    return seen


def test_pack_covers_every_token_once_and_keeps_documents_apart(corpus):
    directory, docs = corpus
    source = PackedSource(directory, "train", T)
    seen = _targets_by_document(source, docs)
    counts = collections.Counter(seen)
    want = {(d, i) for d, doc in enumerate(docs) for i in range(1, len(doc))}
    assert set(counts) == want, "every token after a document's first is a target"
    assert max(counts.values()) == 1, "exactly once per epoch"
    # Documents with more than T predictions are cut, and the source says how many.
    assert source.stats.split_documents == sum(n - 1 > T for n in LENGTHS)
    assert source.stats.skipped_documents == 1
    assert "cut into pieces" in source.stats.describe(T)


def test_pack_index_next_fit():
    # Documents of 5, 5, 10 predictions (lengths + 1) in rows of 12: [5, 5], [10].
    docs = np.cumsum([0, 6, 6, 11])
    index = pack_index(docs, 12)
    assert index.rows == 2
    assert index.pieces(0, 12) == [(0, 5), (6, 5)]
    assert index.pieces(1, 12) == [(12, 10)]
    # A long document: full rows first, then its last piece opens a packed row.
    index = pack_index(np.array([0, 30]), 12)  # 29 predictions: 12, 12, 5
    assert [index.pieces(r, 12) for r in range(index.rows)] == [[(0, 12)], [(12, 12)], [(24, 5)]]
    with pytest.raises(ValueError, match="nothing to predict"):
        pack_index(np.array([0, 1, 2]), 12)


def test_cut_mode_is_the_concatenated_stream(corpus):
    directory, docs = corpus
    source = PackedSource(directory, "train", T, mode="cut")
    stream = np.concatenate(docs)
    assert len(source) == (len(stream) - 1) // T
    for r in (0, len(source) - 1):
        row = source[r]
        np.testing.assert_array_equal(row["inputs"], stream[r * T : r * T + T])
        np.testing.assert_array_equal(row["targets"], stream[r * T + 1 : r * T + T + 1])
        assert np.all(row["segment_ids"] == 1)
        np.testing.assert_array_equal(row["positions"], np.arange(T))


def test_target_bytes_follow_the_shard(corpus):
    directory, _ = corpus
    source = PackedSource(directory, "valid", T)
    total = sum(int(source[r]["target_bytes"].sum()) for r in range(len(source)))
    assert total == (7 - 1) + (30 - 1)  # one byte per token; a document's first is not a target


def test_two_processes_read_disjoint_rows_and_all_of_them(corpus):
    directory, _ = corpus
    source = PackedSource(directory, "train", T)
    n = len(source) // 2 * 2
    rows = {
        p: [
            b["inputs"][i].tobytes()
            for b in eval_batches(
                source, batch_size=2, num_examples=n, process_index=p, process_count=2
            )
            for i in range(len(b["inputs"]))
        ]
        for p in (0, 1)
    }
    assert not set(rows[0]) & set(rows[1])
    assert len(rows[0]) + len(rows[1]) == n
    # The shuffled training stream of each process stays in its own shard too.
    it0 = train_iterator(source, batch_size=2, seed=1, process_index=0, process_count=2)
    first_epoch = {next(it0)["inputs"][0].tobytes() for _ in range(n // 2)}
    leftover = {source[i]["inputs"].tobytes() for i in range(n, len(source))}
    assert first_epoch <= set(rows[0]) | leftover


def test_resumed_iterator_continues_exactly(corpus):
    directory, _ = corpus
    source = PackedSource(directory, "train", T)
    it = train_iterator(source, batch_size=4, seed=3)
    for _ in range(3):
        next(it)
    state = it.get_state()
    want = [next(it)["inputs"] for _ in range(4)]
    it2 = train_iterator(source, batch_size=4, seed=3)
    it2.set_state(state)
    for w in want:
        np.testing.assert_array_equal(next(it2)["inputs"], w)


def test_source_pickles_as_its_path(corpus):
    directory, _ = corpus
    source = PackedSource(directory, "train", T)
    blob = pickle.dumps(source)
    assert len(blob) < 2000  # no tokens inside
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again[3]["inputs"], source[3]["inputs"])


def test_bad_arguments(corpus, tmp_path):
    directory, _ = corpus
    with pytest.raises(ValueError, match="mode"):
        PackedSource(directory, "train", T, mode="shuffle")
    with pytest.raises(FileNotFoundError, match="linmix.prepare"):
        PackedSource(tmp_path / "missing", "train", T)
    with pytest.raises(ValueError, match="split"):
        PackedSource(directory, "test", T)
