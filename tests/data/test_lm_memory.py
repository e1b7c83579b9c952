"""A token shard far larger than the reader's memory: it trains, and the reader stays small.

The shard is 4 GiB of uint16 tokens (2^31 tokens in 64 documents), created sparse so the test
writes almost nothing to disk. Memory is measured two ways: the anonymous resident memory
(`RssAnon` in /proc/self/status: what the process allocated, not the mapped file's page cache)
before and after reading hundreds of random rows through the grain pipeline, and the peak
resident set (`ru_maxrss`) of a CLI run that trains on the shard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from linmix.data import train_iterator
from linmix.data.lm import PackedSource
from linmix.data.shards import FORMAT_VERSION

ROOT = Path(__file__).resolve().parents[2]
TOKENS = 1 << 31  # 4 GiB of uint16
DOCS = 64

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("big")
    _sparse(d / "train.tokens", 2 * TOKENS)
    _sparse(d / "train.bytes", TOKENS)
    np.save(d / "train.docs.npy", np.linspace(0, TOKENS, DOCS + 1).astype(np.int64))
    valid = np.arange(1000, dtype="<u2") % 256
    (d / "valid.tokens").write_bytes(valid.tobytes())
    (d / "valid.bytes").write_bytes(np.ones(1000, np.uint8).tobytes())
    np.save(d / "valid.docs.npy", np.array([0, 1000], np.int64))
    split = {"train": (DOCS, TOKENS), "valid": (1, 1000)}
    meta = {
        "format_version": FORMAT_VERSION,
        "dtype": "<u2",
        "tokenizer": {"kind": "bytes", "vocab_size": 256},
        "splits": {s: {"documents": n, "tokens": t, "bytes": t} for s, (n, t) in split.items()},
    }
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def _rss_anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon")


def test_reader_memory_stays_small(big_corpus):
    assert os.path.getsize(big_corpus / "train.tokens") == 4 << 30
    source = PackedSource(big_corpus, "train", 256)
    assert len(source) >= TOKENS // 256 - DOCS
    it = train_iterator(source, batch_size=16, seed=0, num_threads=1, prefetch_buffer_size=1)
    next(it)  # threads and buffers started
    before = _rss_anon_mib()
    for _ in range(200):  # 3,200 random rows from all over the shard
        batch = next(it)
    grown = _rss_anon_mib() - before
    assert batch["inputs"].shape == (16, 256)
    assert grown < 64, f"reading the shard grew anonymous memory by {grown:.0f} MiB"


def test_trains_on_a_shard_larger_than_memory_budget(big_corpus, tmp_path):
    # The CLI in a child that reports its own peak resident set when it is done.
    report = (
        "import resource, runpy, sys; sys.argv = sys.argv[1:]; "
        "runpy.run_module('linmix.main', run_name='__main__'); "
        "print('peak_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    cmd = [
        sys.executable, "-c", report, "main", "--config=ml_collections_configs/lm.py:mixer=gla",
        f"--config.data.path={big_corpus}", "--config.data.seq_len=64",
        "--config.model.d_model=16", "--config.model.num_layers=2", "--config.model.num_heads=2",
        "--config.train.batch_size=4", "--config.train.steps=3", "--config.train.warmup_steps=1",
        "--config.train.eval_every=3", "--config.train.progress=False", f"--workdir={tmp_path}",
    ]  # fmt: skip
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    peak_mib = int(proc.stdout.split("peak_kib")[-1]) / 1024
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and np.isfinite(rows[-1]["eval_loss"])
    assert peak_mib < 2048, f"peak resident set {peak_mib:.0f} MiB for a 4096 MiB shard"
