"""The language-model task through the trainer: evaluation on packed held-out documents equals
each document scored alone; runs report loss, perplexity and bits per byte; a killed run resumes
its data stream exactly; bad LM configs fail in one line."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from linmix.models import LM, ModelConfig
from linmix.testing.corpus import tiny_lm_config, write_corpus
from linmix.train import loop
from linmix.train.metrics import read_metrics
from linmix.train.step import eval_step
from linmix.train.tasks import make_task

ROOT = Path(__file__).resolve().parents[2]
VALID = [9, 17, 3, 30, 12, 2]  # awkward lengths around T = 16


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(1)
    train = _counting(rng, rng.integers(2, 60, 80))
    valid = _counting(rng, VALID)
    return write_corpus(tmp_path_factory.mktemp("lm"), train, valid, vocab_size=64), valid


def _counting(rng, lengths) -> list[np.ndarray]:
    """Learnable documents: counting mod 64 from a random start, with a random stride of 1 or 2
    per document (the first two tokens give the rest)."""
    return [(rng.integers(64) + rng.integers(1, 3) * np.arange(n)) % 64 for n in lengths]


@pytest.mark.parametrize("mixer", ["attention", "gla"])
def test_packed_evaluation_equals_documents_scored_alone(corpus, mixer):
    directory, valid = corpus
    nnx.set_graph_mode(False)
    config = tiny_lm_config(directory, mixer)
    config.model.vocab_size = 64
    model = LM(ModelConfig(**config.model.to_dict()), rngs=nnx.Rngs(0))
    task = make_task(config)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    scores = task.evaluate(jax.jit(eval_step), model, sharding)

    nll, count = 0.0, 0
    for doc in valid:  # each document alone, as one sequence, no segment ids
        pieces = [doc[i : i + 17] for i in range(0, max(len(doc) - 1, 1), 16)]
        for piece in pieces:  # the packer cuts documents longer than T = 16 the same way
            logits = model(piece[None, :-1])[0]
            nll += float(optax.softmax_cross_entropy_with_integer_labels(logits, piece[1:]).sum())
            count += len(piece) - 1
    assert count == sum(n - 1 for n in VALID)
    np.testing.assert_allclose(scores["eval_loss"], nll / count, rtol=2e-5)
    np.testing.assert_allclose(scores["eval_ppl"], math.exp(nll / count), rtol=2e-5)
    # One byte per token: bits per byte is the loss in bits.
    np.testing.assert_allclose(scores["eval_bpb"], nll / count / math.log(2), rtol=2e-5)


def test_lm_run_trains_and_reports(corpus, tmp_path):
    directory, _ = corpus
    config = tiny_lm_config(directory, "gla", steps=12, lr=1e-2)
    config.model.vocab_size = 64
    last = loop.run(config, tmp_path)
    rows = read_metrics(tmp_path)
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [4, 8, 12]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert evals[-1]["eval_loss"] < math.log(64)  # better than uniform over the vocabulary
    assert last["eval_bpb"] == pytest.approx(last["eval_loss"] / math.log(2))


CLI = [sys.executable, "-m", "linmix.main", "--config=ml_collections_configs/lm.py:mixer=gla"]
SMALL = [
    "--config.data.seq_len=16", "--config.model.d_model=16", "--config.model.num_layers=2",
    "--config.model.num_heads=2", "--config.model.chunk_size=8", "--config.model.vocab_size=64",
    "--config.train.batch_size=4", "--config.train.log_every=1", "--config.train.eval_every=1000",
    "--config.train.eval_examples=2", "--config.train.progress=False",
    "--config.train.warmup_steps=2",
]  # fmt: skip


def _cli(directory: Path, workdir: Path, steps: int) -> list[str]:
    return [*CLI, f"--config.data.path={directory}", *SMALL, f"--config.train.steps={steps}",
            "--config.train.checkpoint_every=10", f"--workdir={workdir}"]  # fmt: skip


def _env() -> dict:
    return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")


def test_killed_lm_run_resumes_the_data_stream_exactly(corpus, tmp_path):
    directory, _ = corpus
    steps = 40
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_cli(directory, straight, steps), cwd=ROOT, env=_env(), check=True,
                   capture_output=True)  # fmt: skip
    proc = subprocess.Popen(_cli(directory, killed, steps), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    ckpt = killed / "checkpoints"
    end = time.time() + 300

    def saved() -> list[int]:
        return [int(p.name) for p in ckpt.iterdir() if p.name.isdigit()] if ckpt.exists() else []

    while not any(s >= 20 for s in saved()):
        assert proc.poll() is None and time.time() < end, "the run ended before the kill"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = subprocess.run(_cli(directory, killed, steps), cwd=ROOT, env=_env(), check=True,
                           capture_output=True, text=True)  # fmt: skip
    assert "resuming from checkpoint" in again.stdout
    assert "parameters" in again.stdout and "rows of 16 tokens" in again.stdout
    a, b = read_metrics(straight), read_metrics(killed)
    assert [r["step"] for r in b] == list(range(1, steps + 1))
    for ra, rb in zip(a, b, strict=True):  # same batches in the same order: identical losses
        assert ra["loss"] == rb["loss"], ra["step"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--config.data.path=/nonexistent/corpus"], "linmix.prepare"),
        (["--config.model.vocab_size=32"], "--config.model.vocab_size=64"),
        (["--config.data.mode=shuffle"], "data.mode"),
    ],
)
def test_bad_lm_config_one_line_error(corpus, tmp_path, extra, needle):
    directory, _ = corpus
    args = [*CLI, f"--config.data.path={directory}", "--config.model.vocab_size=64", *extra]
    proc = subprocess.run([*args, f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("linmix: error: "), proc.stderr
    assert needle in lines[0]


def test_bidirectional_mixer_is_refused_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "linmix.main", "--config=ml_collections_configs/mqar.py:mixer=slab",
         f"--workdir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "bidirectional" in lines[0], proc.stderr


def test_sequence_parallel_lm_run_matches_the_unsharded_run(corpus, tmp_path):
    """Packed documents under LASP-2: time sharded over 4 devices (segment ids crossing shard
    boundaries) gives the losses of the run on one data axis."""
    directory, _ = corpus
    losses = {}
    for name, mesh in (("plain", {"data": -1, "seq": 1}), ("seq4", {"data": 2, "seq": 4})):
        config = tiny_lm_config(directory, "gla", steps=4, eval_every=4, checkpoint_every=4)
        config.model.vocab_size = 64
        config.mesh.update(mesh)
        loop.run(config, tmp_path / name)
        losses[name] = [r["loss"] for r in read_metrics(tmp_path / name) if "loss" in r]
    np.testing.assert_allclose(losses["seq4"], losses["plain"], rtol=2e-5)
