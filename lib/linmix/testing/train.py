"""Tiny MQAR training configs and the parameters a run leaves in its newest checkpoint."""

from __future__ import annotations

from pathlib import Path

import orbax.checkpoint as ocp
from ml_collections import ConfigDict

from linmix.configs.mqar import get_config
from linmix.train.checkpoint import Checkpointer


def tiny_config(**train) -> ConfigDict:
    """The MQAR config with GLA shrunk to seconds of CPU: V=64, T=16, d=16, 8 steps of batch 8
    (one sequence per test device), logs every 2 steps, evaluations and checkpoints every 4;
    keyword arguments override `config.train` fields."""
    config = get_config("mixer=gla")
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


def final_params(workdir: str | Path) -> tuple[int, object]:
    """(step, train state) restored from the newest checkpoint under `workdir`."""
    ckpt = Checkpointer(Path(workdir) / "checkpoints", every=1, keep=2)
    step = ckpt.latest_step()
    restored = ckpt.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    ckpt.close()
    return step, restored.state
