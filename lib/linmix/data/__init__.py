"""Data as deterministic grain sources and the input pipelines over them: the synthetic MQAR
task (`mqar`) and MAD suite (`mad`), and real text (`corpus` readers, `tokenizer`s, prepared
token `shards`, and `lm` rows of packed documents)."""

from linmix.data.lm import PackedSource
from linmix.data.mad import MAD_TASKS, MADSource, make_mad_sources, validate_mad_args
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
    "MAD_TASKS",
    "SPLIT_INDEX",
    "MADSource",
    "MQARSource",
    "PackedSource",
    "eval_batches",
    "make_mad_sources",
    "make_mqar_sources",
    "mqar_example",
    "per_process_batch_size",
    "train_iterator",
    "validate_mad_args",
    "validate_mqar_args",
]
