"""Grain pipeline: batch layout, shuffling, sharding, exact resume, Orbax round-trip."""

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from linmix.data import MQARSource, eval_batches, train_iterator

T = 64


def _source(num_examples: int = 100) -> MQARSource:
    return MQARSource(vocab_size=128, seq_len=T, num_kv_pairs=4, num_examples=num_examples, seed=0)


def _take(it, n: int) -> list[dict]:
    return [next(it) for _ in range(n)]


def _assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_train_batches_shape_and_dtype():
    it = train_iterator(_source(), batch_size=8, seed=0)
    batch = next(it)
    assert isinstance(it, grain.DatasetIterator)
    assert set(batch) == {"inputs", "targets"}
    for v in batch.values():
        assert isinstance(v, np.ndarray)
        assert v.shape == (8, T) and v.dtype == np.int32


def test_unshuffled_order_and_repeat():
    src = _source(num_examples=10)
    batches = _take(train_iterator(src, batch_size=4, seed=0, shuffle=False), 5)
    # 20 examples from a 10-example source: two full passes in index order.
    rows = np.concatenate([b["inputs"] for b in batches])
    expected = np.stack([src[i % 10]["inputs"] for i in range(20)])
    np.testing.assert_array_equal(rows, expected)


def test_shuffle_is_deterministic_by_seed():
    src = _source()
    a = _take(train_iterator(src, batch_size=8, seed=1), 4)
    b = _take(train_iterator(src, batch_size=8, seed=1), 4)
    c = _take(train_iterator(src, batch_size=8, seed=2), 4)
    _assert_same_batches(a, b)
    assert not np.array_equal(a[0]["inputs"], c[0]["inputs"])


def test_epoch_is_a_permutation_and_reshuffled():
    src = _source(num_examples=16)
    rows = [
        r.tobytes()
        for b in _take(train_iterator(src, batch_size=8, seed=0), 4)
        for r in b["inputs"]
    ]
    all_rows = {src[i]["inputs"].tobytes() for i in range(16)}
    assert set(rows[:16]) == all_rows and set(rows[16:]) == all_rows
    assert rows[:16] != rows[16:]  # each epoch gets its own order


def test_process_shards_are_disjoint_and_split_the_batch():
    src = _source(num_examples=32)
    shards = [
        train_iterator(src, batch_size=8, seed=0, process_index=p, process_count=2)
        for p in range(2)
    ]
    seen = []
    for it in shards:
        batches = _take(it, 4)  # 4 x 4 = one full pass over a 16-example shard
        assert all(b["inputs"].shape == (4, T) for b in batches)
        seen.append({r.tobytes() for b in batches for r in b["inputs"]})
    assert len(seen[0]) == len(seen[1]) == 16
    assert not seen[0] & seen[1]


def test_batch_size_must_divide_across_processes():
    with pytest.raises(ValueError, match="not divisible by the number of processes"):
        train_iterator(_source(), batch_size=6, seed=0, process_index=0, process_count=4)
    with pytest.raises(ValueError, match="not divisible by the number of processes"):
        next(eval_batches(_source(), batch_size=3, process_index=1, process_count=2))


def test_get_state_set_state_resumes_exactly():
    src = _source()
    it = train_iterator(src, batch_size=8, seed=3)
    _take(it, 5)
    state = it.get_state()
    expected = _take(it, 3)

    fresh = train_iterator(src, batch_size=8, seed=3)
    fresh.set_state(state)
    _assert_same_batches(_take(fresh, 3), expected)


def test_orbax_checkpoint_manager_round_trip(tmp_path):
    src = _source()
    it = train_iterator(src, batch_size=8, seed=4)
    _take(it, 5)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        manager.wait_until_finished()
    expected = _take(it, 3)

    fresh = train_iterator(src, batch_size=8, seed=4)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        assert manager.latest_step() == 5
        restored = manager.restore(
            5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh))
        )
    assert restored["data"] is fresh
    _assert_same_batches(_take(fresh, 3), expected)


def test_eval_batches_ordered_with_partial_last_batch():
    src = _source(num_examples=30)
    batches = list(eval_batches(src, batch_size=8, num_examples=20))
    assert [b["inputs"].shape[0] for b in batches] == [8, 8, 4]
    rows = np.concatenate([b["targets"] for b in batches])
    np.testing.assert_array_equal(rows, np.stack([src[i]["targets"] for i in range(20)]))
    # A second pass is identical: no hidden state or shuffling.
    _assert_same_batches(batches, list(eval_batches(src, batch_size=8, num_examples=20)))
    assert sum(b["inputs"].shape[0] for b in eval_batches(src, batch_size=8)) == 30


def test_eval_batches_shard_across_processes():
    src = _source(num_examples=12)
    for p in range(2):
        batches = list(eval_batches(src, batch_size=4, process_index=p, process_count=2))
        rows = np.concatenate([b["inputs"] for b in batches])
        # Process p reads indices p, p + 2, ... in order, 2 per batch.
        expected = np.stack([src[i]["inputs"] for i in range(p, 12, 2)])
        np.testing.assert_array_equal(rows, expected)
        assert [b["inputs"].shape[0] for b in batches] == [2, 2, 2]


def test_eval_batches_rejects_too_many_examples():
    with pytest.raises(ValueError, match="num_examples must be in"):
        next(eval_batches(_source(num_examples=10), batch_size=4, num_examples=11))


def test_worker_processes_match_in_process_order_and_resume():
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # grain workers read absl flags
    src = _source()
    reference = _take(train_iterator(src, batch_size=8, seed=5), 8)

    it = train_iterator(src, batch_size=8, seed=5, worker_count=2)
    try:
        _assert_same_batches(_take(it, 5), reference[:5])
        state = it.get_state()
    finally:
        it.close()
    fresh = train_iterator(src, batch_size=8, seed=5, worker_count=2)
    try:
        fresh.set_state(state)
        _assert_same_batches(_take(fresh, 3), reference[5:])
    finally:
        fresh.close()
