"""Small prepared corpora for tests: token documents written in the `linmix.data.shards` format,
and a tiny LM training config over one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ml_collections import ConfigDict

from linmix.configs.lm import get_config
from linmix.data.shards import CorpusWriter


def write_corpus(
    directory: str | Path,
    train: list[np.ndarray],
    valid: list[np.ndarray],
    vocab_size: int = 256,
) -> Path:
    """A corpus directory from token documents; each token stands for one byte."""
    with CorpusWriter(directory, vocab_size) as w:
        for split, docs in (("train", train), ("valid", valid)):
            for i, ids in enumerate(docs):
                w.splits[split].add(f"{split}{i}", np.asarray(ids), np.ones(len(ids), np.int64))
        w.commit({"tokenizer": {"kind": "bytes"}})
    return Path(directory)


def random_documents(rng: np.random.Generator, lengths, vocab_size: int = 256) -> list:
    return [rng.integers(0, vocab_size, n) for n in lengths]


def tiny_lm_config(path: str | Path, mixer: str = "gla", **train) -> ConfigDict:
    """The LM config shrunk to seconds of CPU over the corpus at `path`: T=16, d=16, 8 steps of
    batch 8, evaluations and checkpoints every 4; keyword arguments override `config.train`."""
    config = get_config(f"mixer={mixer},size=tiny")
    config.data.path = str(path)
    config.data.seq_len = 16
    config.model.d_model = 16
    config.model.num_layers = 2
    config.model.num_heads = 2
    config.model.chunk_size = 8
    t = config.train
    t.steps, t.batch_size, t.warmup_steps = 8, 8, 2
    t.log_every, t.eval_every, t.checkpoint_every, t.eval_examples = 2, 4, 4, 0
    t.progress = False
    for k, v in train.items():
        t[k] = v
    return config
