"""MAD tasks train through the normal loop; bad MAD configs fail with one line naming the field."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ml_collections import ConfigDict

from linmix.configs.mad import get_config
from linmix.data import MAD_TASKS
from linmix.train import loop
from linmix.train.metrics import read_metrics
from linmix.train.validate import ConfigError, validate

ROOT = Path(__file__).resolve().parents[2]


def tiny_mad_config(task: str, seq_len: int):
    """GLA on a MAD task shrunk to seconds of CPU: d=16 without MLPs, 6 steps of batch 8 (one
    sequence per test device), evaluations every 3 steps on 8 test examples."""
    config = get_config(f"mixer=gla,task={task}")
    config.data.seq_len = seq_len
    config.data.num_train, config.data.num_test = 64, 8
    config.model.d_model, config.model.chunk_size, config.model.mlp_ratio = 16, 8, 0.0
    t = config.train
    t.steps, t.batch_size, t.warmup_steps = 6, 8, 2
    t.log_every, t.eval_every, t.checkpoint_every, t.eval_examples = 3, 3, 6, 8
    t.progress = False
    return config


@pytest.mark.parametrize(
    "task, seq_len, options",
    [("in_context_recall", 16, {}), ("selective_copying", 16, {"num_tokens_to_copy": 4})],
)
def test_mad_task_trains_and_evaluates(tmp_path, task, seq_len, options):
    config = tiny_mad_config(task, seq_len)
    config.data.task_options.update(options)
    result = loop.run(config, tmp_path)
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [3, 6]
    assert all(np.isfinite(r["loss"]) for r in records)
    accuracies = [r["eval_accuracy"] for r in records if "eval_accuracy" in r]
    assert len(accuracies) == 2 and all(0.0 <= a <= 1.0 for a in accuracies)
    assert result["eval_accuracy"] == accuracies[-1]


@pytest.mark.parametrize("task", sorted(MAD_TASKS))
def test_every_mad_task_config_validates(task):
    config = get_config(f"mixer=gla,task={task}")
    assert config.data.task == task and config.model.vocab_size == MAD_TASKS[task]["vocab_size"]
    assert validate(config).mixer == "gla"


def test_mad_config_defaults_follow_the_task():
    config = get_config("task=selective_copying")
    assert (config.data.vocab_size, config.data.seq_len) == (16, 256)
    assert config.data.task_options.to_dict() == {"num_tokens_to_copy": 16}
    config.data.vocab_size = 32  # one vocabulary for data and model
    assert config.model.vocab_size == 32
    assert validate(config).mixer == "attention"
    with pytest.raises(ValueError, match="unknown MAD task 'nope'"):
        get_config("task=nope")


def _bad_unknown_task(config):
    config.data.task = "nope"


def _bad_data_vocab(config):
    config.data.vocab_size = 2  # below data, blank and copy tokens


def _bad_model_vocab(config):
    config.model = ConfigDict(dict(config.model.to_dict(), vocab_size=8))  # unshared


@pytest.mark.parametrize(
    "breaks, needle",
    [
        (_bad_unknown_task, "data.task 'nope'"),
        (_bad_data_vocab, "data: vocab_size must be >= 3"),
        (_bad_model_vocab, "model.vocab_size=8 < data.vocab_size=16"),
    ],
)
def test_bad_mad_config_names_the_field(breaks, needle):
    config = get_config("mixer=gla,task=selective_copying")
    breaks(config)
    with pytest.raises(ConfigError, match=needle):
        validate(config)


def test_cli_rejects_a_bad_mad_task(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "linmix.main", "--config=ml_collections_configs/mad.py:mixer=gla,"
         "task=memorization", "--config.train.steps=2", "--config.data.task=nope",
         f"--workdir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("linmix: error: "), proc.stderr
    assert "data.task 'nope'" in lines[0]
    assert not (tmp_path / "checkpoints").exists()
