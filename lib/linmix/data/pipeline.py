"""Grain input pipelines shared by every task.

Training uses an infinite, shuffled, checkpointable grain iterator over a
random-access source; evaluation uses a plain ordered generator. Both shard the
source across JAX processes by striding (process ``p`` of ``P`` reads indices
``p, p + P, ...``), and both take the *global* batch size and yield the
per-process share of it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import grain
import jax
import numpy as np
from absl import flags

Batch = dict[str, np.ndarray]


class RandomAccessSource(Protocol):
    """What grain's ``MapDataset.source`` needs: a sized, indexable collection."""

    def __len__(self) -> int: ...

    def __getitem__(self, idx: int) -> Any: ...


def _resolve_shard(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    """Defaults to the JAX process grid; explicit values exist for tests and tools."""
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"Invalid shard: process_index={index}, process_count={count}.")
    return index, count


def per_process_batch_size(batch_size: int, process_count: int) -> int:
    """Splits a global batch evenly across processes, or explains why it cannot."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if batch_size % process_count != 0:
        raise ValueError(
            f"Global batch_size={batch_size} is not divisible by the number of "
            f"processes ({process_count}); every process must get an equal share."
        )
    return batch_size // process_count


def train_iterator(
    source: RandomAccessSource,
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    worker_count: int = 0,
    num_threads: int = 2,
    prefetch_buffer_size: int = 4,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.DatasetIterator:
    """Returns an infinite, checkpointable iterator of per-process training batches.

    Each batch is the source's example dict with every leaf stacked along a new
    leading axis of size ``batch_size // process_count``. Batches run across
    epoch boundaries (the data repeat forever, reshuffled every epoch).

    The iterator supports ``get_state()`` / ``set_state()`` and Orbax through
    ``grain.checkpoint.CheckpointSave(it)`` / ``grain.checkpoint.CheckpointRestore(it)``;
    a restored iterator continues with exactly the batch that would have come next.

    Args:
      source: random-access source, e.g. ``MQARSource``.
      batch_size: global batch size (over all processes).
      seed: shuffle seed in ``[0, 2**32)``; the same seed gives the same order.
      shuffle: shuffle globally within each process's shard, differently per epoch.
      worker_count: grain worker processes (``mp_prefetch``); 0 reads in this
        process (threads only). Workers need absl flags to be parsed, which
        ``absl.app.run`` does; the batch order does not depend on ``worker_count``.
      num_threads: threads producing batches in each process. Generation holds the
        GIL, so more threads mostly add contention; a couple suffice to overlap
        input work with device compute.
      prefetch_buffer_size: number of batches read ahead per process.
      process_index, process_count: shard to read; default to JAX's.
    """
    index, count = _resolve_shard(process_index, process_count)
    local_batch = per_process_batch_size(batch_size, count)
    if len(source) < count:
        raise ValueError(f"Source has {len(source)} examples, fewer than {count} processes.")
    if shuffle and not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}.")
    if worker_count < 0:
        raise ValueError(f"worker_count must be >= 0, got {worker_count}.")
    if worker_count > 0 and not flags.FLAGS.is_parsed():
        # grain's worker processes read absl flags; fail here with a clear hint
        # instead of deep inside grain on the first batch.
        raise RuntimeError(
            "worker_count > 0 needs absl flags to be parsed: run under absl.app.run "
            "or call absl.flags.FLAGS.mark_as_parsed() first."
        )

    ds = grain.MapDataset.source(source)[index::count]
    if shuffle:
        # Shuffle before repeat so that every epoch is a permutation of the shard
        # (grain folds the epoch number into the seed).
        ds = ds.shuffle(seed=seed)
    # Batching the MapDataset (rather than the IterDataset) makes one batch the
    # unit of prefetching and of the checkpointed position.
    ds = ds.repeat(None).batch(local_batch, drop_remainder=True)
    read_options = grain.ReadOptions(
        num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size
    )
    iter_ds = ds.to_iter_dataset(read_options)
    if worker_count > 0:
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(iter_ds)


def _stack(examples: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *leaves: np.stack(leaves), *examples)


def eval_batches(
    source: RandomAccessSource,
    *,
    batch_size: int,
    num_examples: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[Batch]:
    """Yields one ordered pass over the first ``num_examples`` examples (default: all).

    This process reads indices ``process_index, process_index + process_count, ...``
    in batches of ``batch_size // process_count``; the last batch may be smaller.
    If ``num_examples`` is not a multiple of ``batch_size``, processes may see
    different numbers of examples in the last batch, so multi-process callers that
    need equal shapes should choose ``num_examples`` divisible by ``batch_size``.
    """
    index, count = _resolve_shard(process_index, process_count)
    local_batch = per_process_batch_size(batch_size, count)
    total = len(source) if num_examples is None else num_examples
    if not 0 <= total <= len(source):
        raise ValueError(f"num_examples must be in [0, {len(source)}], got {num_examples}.")

    indices = range(index, total, count)
    for start in range(0, len(indices), local_batch):
        yield _stack([source[i] for i in indices[start : start + local_batch]])
