"""Synthetic tasks as deterministic grain sources, and the input pipelines over them."""

from linmix.data.mqar import (
    IGNORE_INDEX,
    SPLIT_INDEX,
    MQARSource,
    make_mqar_sources,
    mqar_example,
    validate_mqar_args,
)
from linmix.data.pipeline import eval_batches, per_process_batch_size, train_iterator

__all__ = [
    "IGNORE_INDEX",
    "SPLIT_INDEX",
    "MQARSource",
    "eval_batches",
    "make_mqar_sources",
    "mqar_example",
    "per_process_batch_size",
    "train_iterator",
    "validate_mqar_args",
]
