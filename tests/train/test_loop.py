"""Training loop: a tiny MQAR run writes metrics and checkpoints, resumes exactly after a kill."""

import importlib.util
import json
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from linmix.train import loop
from linmix.train.checkpoint import Checkpointer
from linmix.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]


def tiny_config(**train):
    spec = importlib.util.spec_from_file_location(
        "mqar_cfg", ROOT / "ml_collections_configs/mqar.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("mixer=gla")
    config.data.vocab_size = 64
    config.data.seq_len = 16
    config.data.num_kv_pairs = 2
    config.data.num_train = 256
    config.data.num_test = 16
    config.model.d_model = 16
    config.model.chunk_size = 8
    t = config.train
    t.steps, t.batch_size, t.warmup_steps = 8, 8, 2  # batch over the 8 test devices
    t.log_every, t.eval_every, t.checkpoint_every, t.eval_examples = 2, 4, 4, 8
    t.progress = False
    for k, v in train.items():
        t[k] = v
    return config


def final_params(workdir):
    ckpt = Checkpointer(Path(workdir) / "checkpoints", every=1, keep=2)
    step = ckpt.latest_step()
    restored = ckpt.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    ckpt.close()
    return step, restored.state


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


def test_resume_after_crash_continues_exactly(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    loop.run(tiny_config(), straight)

    crashed = tmp_path / "crashed"
    save = Checkpointer.save

    def save_or_die(self, step, *args, **kw):
        if step == 7:
            raise KeyboardInterrupt("simulated kill")
        return save(self, step, *args, **kw)

    monkeypatch.setattr(Checkpointer, "save", save_or_die)
    with pytest.raises(KeyboardInterrupt):
        loop.run(tiny_config(), crashed)  # dies in step 7, after the step-4 checkpoint
    assert [r["step"] for r in read_metrics(crashed)] == [2, 4, 6]
    monkeypatch.setattr(Checkpointer, "save", save)
    loop.run(tiny_config(), crashed)  # the same command again: resumes at step 4

    # The metrics file reads as one run (lines after the checkpoint were replaced)...
    a, b = read_metrics(straight), read_metrics(crashed)
    assert [r["step"] for r in b] == [2, 4, 6, 8]
    for ra, rb in zip(a, b, strict=True):
        assert ra["loss"] == rb["loss"] and ra.get("eval_accuracy") == rb.get("eval_accuracy")
    # ...and the final parameters and optimizer state are bitwise those of the straight run.
    (sa, pa), (sb, pb) = final_params(straight), final_params(crashed)
    assert sa == sb == 8
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_array_equal(x, y)
