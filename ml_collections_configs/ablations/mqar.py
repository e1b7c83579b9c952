"""MQAR ablation grid for `python -m linmix.sweep`: mixers x widths x lrs x seeds x tasks.

Default: Zoology's MQAR sweep (HazyResearch/zoology, paper_configs iclr24_zoology_figure2):
(T, key-value pairs) = (64, 4), (128, 8), (256, 16); vocabulary 8192; 100k training and 3k test
examples; 2 layers, no MLP, tied embeddings; AdamW with weight decay 0.1 and a cosine decay
without warmup; learning rates logspace(-4, -2, 4) (rounded to 3 significant digits, so run names
are short and stable); 64 epochs at batch 512 (T <= 128) or 256 (T = 256); widths 64, 128, 256;
twelve mixers. The table reports, per mixer, task and width, the best final eval_accuracy over
learning rates (mean over seeds).

    python -m linmix.sweep --config=ml_collections_configs/ablations/mqar.py --out=runs/sweeps/mqar
    python -m linmix.sweep --config=ml_collections_configs/ablations/mqar.py:preset=cpu \
        --out=runs/sweeps/mqar_cpu
    python -m linmix.sweep --config=ml_collections_configs/ablations/mqar.py --out=DIR --mode=slurm

Presets (`:preset=NAME`): "" the full grid above (432 runs: a GPU cluster's job); "conv" the same
grid in Zoology's later setting, a gated short convolution (BaseConv, 3 taps) as layer 0 and the
mixer as layer 1 (`model.layer_pattern="CL"`, their `Hybrid([BaseConv, mixer])`); "cpu" what a
2-core CPU finishes in a few hours, in the later setting (T=64 only, widths 64 and 128, learning
rates 3e-3 and 1e-2, 20k training examples, 1000 steps of batch 64, eval on 1000 test examples:
48 runs of 2-5 minutes each; `--only=_d64_lr1e-02_` runs the 12 at width 64 and lr 1e-2); "tiny"
the tests' grid (2 mixers x 1 width x 2 lrs x 1 seed x 1 task, V=64, T=16, d=16, 6 steps:
seconds per run).

Fields: `base` the run config spec (`linmix.get_config`'s, with the mixer added as a variant);
`grid.{mixers, widths, lrs, seeds}` set model.mixer, model.d_model, train.lr and seed; each of
`grid.tasks` is {"name", "overrides"} and optionally "base" (the task's own config spec, in place
of `base`); `overrides` apply to every run (before the task's and the
grid's own); `metric` and `mode` ("max" | "min") pick the best learning rate from each run's final
logged `metric`.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from linmix.configs.common import parse_variant

VARIANTS = {"preset": ""}

MIXERS = [
    "attention", "linear_attn", "retnet", "gla", "mamba", "mamba2", "deltanet", "gated_deltanet",
    "hgrn2", "lightnet", "sse", "jrt",
]  # fmt: skip
EPOCHS = 64
NUM_TRAIN = 100_000


def zoology_lrs() -> list[float]:
    """np.logspace(-4, -2, 4) to 3 significant digits: 1e-4, 4.64e-4, 2.15e-3, 1e-2."""
    return [float(f"{10 ** (-4 + 2 * i / 3):.3g}") for i in range(4)]


def mqar_task(seq_len: int, pairs: int, batch: int, *, num_train: int = NUM_TRAIN) -> dict:
    """A named task: sequence length, key-value pairs, and the batch and steps of its budget."""
    steps = EPOCHS * num_train // batch
    overrides = {
        "data.seq_len": seq_len,
        "data.num_kv_pairs": pairs,
        "train.batch_size": batch,
        "train.steps": steps,
        "train.eval_every": max(1, steps // 8),
        "train.checkpoint_every": max(1, steps // 8),
    }
    return {"name": f"T{seq_len}_kv{pairs}", "overrides": overrides}


def get_config(arg: str | None = None) -> ConfigDict:
    preset = parse_variant(arg, VARIANTS)["preset"]
    config = ConfigDict()
    config.base = "mqar"
    config.metric = "eval_accuracy"
    config.mode = "max"
    config.select = "best over lrs"  # per (mixer, task, width): the best lr's mean over seeds
    config.overrides = ConfigDict(allow_dotted_keys=True)  # dotted keys, as on the command line
    config.overrides.update({
        "data.vocab_size": 8192,
        "data.num_train": NUM_TRAIN,
        "data.num_test": 3_000,
        "model.num_layers": 2,
        "model.mlp_ratio": 0.0,
        "model.tie_embeddings": True,
        "train.weight_decay": 0.1,
        "train.warmup_steps": 0,  # cosine decay from the peak lr, no warmup
        "train.min_lr_ratio": 0.0,
        "train.eval_examples": 3_000,  # the whole test set
        "train.log_every": 100,
        "train.progress": False,
    })  # fmt: skip
    tasks = [mqar_task(64, 4, 512), mqar_task(128, 8, 512), mqar_task(256, 16, 256)]
    config.grid = {
        "mixers": list(MIXERS),
        "widths": [64, 128, 256],
        "lrs": zoology_lrs(),
        "seeds": [0],
        "tasks": tasks,
    }
    if preset in ("conv", "cpu"):
        config.overrides["model.layer_pattern"] = "CL"  # layer 0 BaseConv, layer 1 the mixer
    if preset == "cpu":
        # A 2-core CPU: T=64 only, widths 64 and 128, the two learning rates that suit the short
        # budget (gated mixers need the larger one: experiments/studies/mqar_width), 20k training
        # examples and 1000 steps of batch 64 (3.2 epochs, 1% of Zoology's 6.4M examples),
        # evaluation on 1000 test examples.
        task = mqar_task(64, 4, 64, num_train=20_000)
        task["overrides"].update({"train.steps": 1000, "train.eval_every": 250,
                                  "train.checkpoint_every": 250})  # fmt: skip
        config.grid.update(widths=[64, 128], lrs=[3e-3, 1e-2], tasks=[task])
        config.overrides.update({"data.num_train": 20_000, "train.eval_examples": 1_000,
                                 "train.log_every": 50})  # fmt: skip
    elif preset == "tiny":
        # The tests: seconds per run (V=64, T=16, d=16, 6 steps; batch 8 splits over 8 devices).
        tiny = {
            "name": "T16_kv2",
            "overrides": {"data.seq_len": 16, "data.num_kv_pairs": 2, "train.batch_size": 8,
                          "train.steps": 6, "train.eval_every": 3, "train.checkpoint_every": 3},
        }  # fmt: skip
        config.grid.update(mixers=["gla", "attention"], widths=[16], lrs=[1e-3, 1e-2], tasks=[tiny])
        config.overrides.update({"data.vocab_size": 64, "data.num_train": 256,
                                 "data.num_test": 16, "model.chunk_size": 8,
                                 "train.eval_examples": 8, "train.log_every": 3})  # fmt: skip
    elif preset not in ("", "conv"):
        raise ValueError(f"unknown preset {preset!r}; known: '', 'conv', 'cpu', 'tiny'")
    return config
