"""Training loop: a tiny MQAR run writes metrics, checkpoints and TensorBoard events (resume,
signals and failures: test_reliability.py)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp

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
