"""Tasks: what the trainer reads and how it evaluates. `make_task(config)` by `config.task`.

A task names its training data (a fresh, checkpointable grain iterator), a static bound on the
supervised positions per global batch (`max_targets`: the loss gathers only those rows; None for
a dense loss), the tokens per step, and its evaluation (metrics named `eval_*`).

- `mqar`: the synthetic recall task; evaluation is the mean over test examples of the accuracy
  over their supervised positions (`eval_accuracy`).
- `mad`: one task of the MAD synthetic suite (`config.data.task`), evaluated like `mqar`; the
  supervised positions vary per example, so the loss is dense.
- `lm`: next-token prediction on a prepared corpus (`linmix.data.lm`); evaluation over the
  held-out documents: `eval_loss` (nats per token), `eval_ppl`, `eval_bpb` (bits per raw UTF-8
  byte of the predicted text, comparable across tokenizers) and `eval_accuracy`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator

import jax
import numpy as np
from ml_collections import ConfigDict

from linmix.data import (
    IGNORE_INDEX,
    eval_batches,
    make_mad_sources,
    make_mqar_sources,
    train_iterator,
)
from linmix.data.lm import PackedSource
from linmix.train.sharding import put_batch

Batch = dict[str, np.ndarray]
# eval_fn(model, global batch) -> per-example sums (train.step.eval_step, jitted by the loop)
EvalFn = Callable[[object, dict], dict]


@dataclasses.dataclass
class Task:
    name: str
    make_iter: Callable[[], Iterator[Batch]]
    max_targets: int | None
    tokens_per_step: int
    evaluate: Callable[[EvalFn, object, object], dict[str, float]]
    description: str = ""


def iterator_maker(source, config: ConfigDict) -> Callable[[], Iterator[Batch]]:
    """Fresh, checkpointable training iterators over `source` with the config's batch and seed."""
    return functools.partial(
        train_iterator,
        source,
        batch_size=config.train.batch_size,
        seed=config.seed,
        worker_count=config.data.worker_count,
    )


def make_task(config: ConfigDict) -> Task:
    if config.task == "mqar":
        return mqar_task(config)
    if config.task == "mad":
        return mad_task(config)
    if config.task == "lm":
        return lm_task(config)
    raise ValueError(f"unknown task {config.task!r}")


def mqar_task(config: ConfigDict) -> Task:
    d, tc = config.data, config.train
    train_src, test_src = make_mqar_sources(
        d.vocab_size,
        d.seq_len,
        d.num_kv_pairs,
        d.num_train,
        d.num_test,
        config.seed,
        power_a=d.power_a,
        num_passes=d.num_passes,
        random_non_queries=d.random_non_queries,
    )

    make_iter = iterator_maker(train_src, config)
    evaluate = _example_accuracy(test_src, tc.batch_size, tc.eval_examples)
    # Every MQAR example supervises exactly num_kv_pairs positions: a static bound for the gather.
    bound = tc.batch_size * d.num_kv_pairs
    return Task("mqar", make_iter, bound, tc.batch_size * d.seq_len, evaluate)


def mad_task(config: ConfigDict) -> Task:
    d, tc = config.data, config.train
    train_src, test_src = make_mad_sources(
        d.task,
        config.seed,
        d.num_train,
        d.num_test,
        vocab_size=d.vocab_size,
        seq_len=d.seq_len,
        **d.task_options.to_dict(),
    )

    make_iter = iterator_maker(train_src, config)
    evaluate = _example_accuracy(test_src, tc.batch_size, tc.eval_examples)
    return Task("mad", make_iter, None, tc.batch_size * d.seq_len, evaluate, repr(train_src))


def lm_task(config: ConfigDict) -> Task:
    d, tc = config.data, config.train
    train_src = PackedSource(d.path, "train", d.seq_len, d.mode)
    valid_src = PackedSource(d.path, "valid", d.seq_len, "pack")

    make_iter = iterator_maker(train_src, config)

    def evaluate(eval_fn, model, sharding) -> dict[str, float]:
        n = len(valid_src) if tc.eval_examples <= 0 else min(tc.eval_examples, len(valid_src))
        sums = _eval_sums(eval_fn, model, sharding, valid_src, tc.batch_size, n)
        nll, count, nbytes = sums["nll_B"].sum(), sums["supervised_B"].sum(), sums["bytes_B"].sum()
        loss = float(nll / max(count, 1))
        return {
            "eval_loss": loss,
            "eval_ppl": float(math.exp(min(loss, 700.0))),
            "eval_bpb": float(nll / math.log(2) / max(nbytes, 1)),
            "eval_accuracy": float(sums["correct_B"].sum() / max(count, 1)),
        }

    description = f"train: {train_src.stats.describe(d.seq_len)} ({d.mode}); held out: " + (
        valid_src.stats.describe(d.seq_len)
    )
    return Task("lm", make_iter, None, tc.batch_size * d.seq_len, evaluate, description)


def _example_accuracy(source, batch_size: int, eval_examples: int):
    """Evaluation over the first `eval_examples` test examples: `eval_accuracy`, the mean over
    examples of the accuracy over their supervised positions."""

    def evaluate(eval_fn, model, sharding) -> dict[str, float]:
        n = min(eval_examples, len(source))
        sums = _eval_sums(eval_fn, model, sharding, source, batch_size, n)
        real = sums["supervised_B"] > 0
        accuracy = sums["correct_B"][real] / sums["supervised_B"][real]
        return {"eval_accuracy": float(np.mean(accuracy))}

    return evaluate


def _eval_sums(eval_fn, model, sharding, source, batch_size: int, n: int) -> dict[str, np.ndarray]:
    """One ordered pass over the first n examples; per-example sums, concatenated over batches.

    A short last batch is padded to the full batch with unsupervised rows, which add nothing to
    the sums (and have supervised_B = 0). Results are replicated to every process."""
    full = batch_size // jax.process_count()
    out: dict[str, list] = {}
    for batch in eval_batches(source, batch_size=batch_size, num_examples=n):
        pad = full - len(batch["inputs"])
        if pad:
            fill = {"targets": IGNORE_INDEX}
            batch = {
                k: np.concatenate([v, np.full((pad, *v.shape[1:]), fill.get(k, 0), v.dtype)])
                for k, v in batch.items()
            }
        for k, v in jax.device_get(eval_fn(model, put_batch(batch, sharding))).items():
            out.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in out.items()}
