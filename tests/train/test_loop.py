"""Training loop: a tiny MQAR run writes metrics, checkpoints and TensorBoard events (resume,
signals and failures: test_reliability.py)."""

import json

import numpy as np

from linmix.testing.train import tiny_config
from linmix.train import loop
from linmix.train.metrics import read_metrics


def test_short_run_writes_metrics_checkpoints_and_tensorboard(tmp_path):
    result = loop.run(tiny_config(), tmp_path)
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    assert all(np.isfinite(r["loss"]) and r["tokens_per_s"] > 0 for r in records)
    assert [r["step"] for r in records if "eval_accuracy" in r] == [4, 8]
    assert 0.0 <= result["eval_accuracy"] <= 1.0
    assert sorted(
        int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()
    ) == [4, 8]
    assert list((tmp_path / "tensorboard").glob("events.*"))
    assert json.loads((tmp_path / "config.json").read_text())["model"]["mixer"] == "gla"
