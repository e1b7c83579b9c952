"""Data as deterministic grain sources and the input pipelines over them: the synthetic MQAR
task (`mqar`), and real text (`corpus` readers, `tokenizer`s, prepared token `shards`, and `lm`
rows of packed documents)."""

from linmix.data.lm import PackedSource
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
    "PackedSource",
    "eval_batches",
    "make_mqar_sources",
    "mqar_example",
    "per_process_batch_size",
    "train_iterator",
    "validate_mqar_args",
]
