"""MAD ablation grid for `python -m linmix.sweep`: mixers x the six MAD tasks x learning rates.

Default: the MAD suite (Poli et al. 2024, arXiv:2403.17844; `athms/mad-lab`) at its baseline
settings (`linmix.data.MAD_TASKS`): two blocks of the mixer plus a SwiGLU MLP at width 128,
AdamW without weight decay, cosine to 1e-6, batch 128, learning rates 1e-4, 5e-4 and 1e-3
(MAD's sweep; its weight-decay axis {0, 0.1} is left out), 200 epochs of the 12,800 training
examples (20,000 steps; memorization: 256 examples, 400 steps). The table reports, per mixer and
task, the best final eval_accuracy over learning rates; MAD's score is the same accuracy.

    python -m linmix.sweep --config=ml_collections_configs/ablations/mad.py --out=runs/sweeps/mad
    python -m linmix.sweep --config=ml_collections_configs/ablations/mad.py:preset=cpu \
        --out=runs/sweeps/mad_cpu

Presets: "" the grid above (6 mixers x 6 tasks x 3 lrs = 108 runs: a GPU job); "cpu" what a
2-core CPU finishes in hours: lr 1e-3 only, 1000 steps of batch 64 (5 epochs; memorization
200 steps), eval on 512 test examples; "tiny" the tests' grid (2 mixers x 2 tasks, 4 steps).
"""

from __future__ import annotations

from ml_collections import ConfigDict

from linmix.configs.common import parse_variant
from linmix.data import MAD_TASKS

VARIANTS = {"preset": ""}

# The mixers of the DeltaNet paper's MAD table, and the other recall-oriented ones.
MIXERS = ["attention", "mamba", "gla", "deltanet", "gated_deltanet", "mamba2"]
EPOCHS = 200
BATCH = 128


def mad_task(name: str, *, epochs: int = EPOCHS, batch: int = BATCH) -> dict:
    """A MAD task at its baseline settings, with the steps of `epochs` at `batch`."""
    steps = max(1, epochs * MAD_TASKS[name]["num_train"] // batch)
    overrides = {"train.batch_size": batch, "train.steps": steps,
                 "train.eval_every": max(1, steps // 4),
                 "train.checkpoint_every": max(1, steps // 4)}  # fmt: skip
    return {"name": name, "base": f"mad:task={name}", "overrides": overrides}


def get_config(arg: str | None = None) -> ConfigDict:
    preset = parse_variant(arg, VARIANTS)["preset"]
    config = ConfigDict()
    config.base = "mad"  # each task names its own spec (mad:task=NAME)
    config.metric = "eval_accuracy"
    config.mode = "max"
    config.select = "best over lrs"
    config.overrides = ConfigDict(allow_dotted_keys=True)
    config.overrides.update({"train.log_every": 100, "train.progress": False})
    config.grid = {
        "mixers": list(MIXERS),
        "widths": [128],
        "lrs": [1e-4, 5e-4, 1e-3],
        "seeds": [0],
        "tasks": [mad_task(name) for name in MAD_TASKS],
    }
    if preset == "cpu":
        # 1000 steps of batch 64 (5 epochs; memorization's 256 examples: 50 epochs, 200 steps).
        tasks = []
        for name in MAD_TASKS:
            task = mad_task(name, batch=64)
            steps = min(1000, 50 * MAD_TASKS[name]["num_train"] // 64)
            task["overrides"].update({"train.steps": steps, "train.eval_every": steps // 4,
                                      "train.checkpoint_every": steps // 4})  # fmt: skip
            tasks.append(task)
        config.grid.update(lrs=[1e-3], tasks=tasks)
        config.overrides.update({"train.eval_examples": 512, "train.log_every": 50})
    elif preset == "tiny":
        tiny = []
        for name in ("in_context_recall", "selective_copying"):
            task = mad_task(name, batch=8)
            task["overrides"].update({"train.steps": 4, "train.eval_every": 2,
                                      "train.checkpoint_every": 2})  # fmt: skip
            tiny.append(task)
        config.grid.update(mixers=["gla", "attention"], widths=[16], lrs=[1e-3], tasks=tiny)
        config.overrides.update({"data.num_train": 64, "data.num_test": 16,
                                 "train.eval_examples": 8, "model.chunk_size": 8})  # fmt: skip
    elif preset:
        raise ValueError(f"unknown preset {preset!r}; known: '', 'cpu', 'tiny'")
    return config
