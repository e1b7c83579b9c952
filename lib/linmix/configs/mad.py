"""MAD synthetic tasks (Poli et al. 2024, arXiv:2403.17844) with any registered causal mixer.

`get_config("mixer=NAME,task=TASK")`: TASK is one of `linmix.data.MAD_TASKS` (default
in_context_recall) with its baseline data settings; task-specific arguments live in
`data.task_options`. The model and optimizer follow the reference suite (`athms/mad-lab`): two
blocks of the mixer plus a GLU MLP (SwiGLU, hidden 4x) at width 128, AdamW at lr 5e-4 without
weight decay, cosine decay to 1e-6, batch 128. Steps are 1000 (10 epochs of the 12,800 training
examples; the reference trains 200 epochs).
"""

from __future__ import annotations

from ml_collections import ConfigDict, FieldReference

from linmix.configs.common import (
    distributed_config,
    implementations_config,
    mesh_config,
    parse_variant,
    short_conv_options,
    train_config,
)
from linmix.data import MAD_TASKS
from linmix.models import REGISTRY

VARIANTS = {"mixer": "attention", "task": "in_context_recall"}

_DATA_FIELDS = ("vocab_size", "seq_len", "num_train", "num_test")


def get_config(arg: str | None = None) -> ConfigDict:
    variant = parse_variant(arg, VARIANTS)
    mixer, task = variant["mixer"], variant["task"]
    if task not in MAD_TASKS:
        raise ValueError(f"unknown MAD task {task!r}; known: {sorted(MAD_TASKS)}")
    baseline = MAD_TASKS[task]
    options = short_conv_options(mixer)
    vocab_size = FieldReference(baseline["vocab_size"])
    config = ConfigDict()
    config.seed = 0  # model init, data order and data generation
    config.task = "mad"
    config.data = ConfigDict(
        dict(
            task=task,  # a MAD_TASKS name
            vocab_size=vocab_size,  # token ids in [0, vocab_size)
            seq_len=baseline["seq_len"],  # T
            num_train=baseline["num_train"],  # training examples (MAD: 12,800)
            num_test=baseline["num_test"],  # test examples (MAD: 1,280)
            # the task's other arguments (noise, motif sizes, tokens to copy)
            task_options=ConfigDict({k: v for k, v in baseline.items() if k not in _DATA_FIELDS}),
            worker_count=0,  # grain worker processes (0: in-process)
        )
    )
    config.model = ConfigDict(
        dict(
            vocab_size=vocab_size,
            d_model=128,  # width (MAD: 128)
            num_layers=2,  # blocks of mixer + MLP (MAD: 2)
            num_heads=2,  # heads (mixers may override in mixer_options)
            mixer=mixer,  # registry name of the mixer
            layer_pattern="L",
            mixer_options=options,  # paper defaults + short conv
            conv_options=dict(conv_size=3),  # "C" blocks: BaseConv taps
            mlp_ratio=4.0,  # SwiGLU hidden width = 4 * d_model
            norm_eps=1e-6,
            tie_embeddings=False,
            dtype="float32",  # compute dtype (params stay fp32)
            remat="none",
            chunk_size=64,  # chunk length of chunked ops
            implementations=implementations_config(),
            causal=REGISTRY[mixer].causal,  # the trainer refuses bidirectional mixers
        )
    )
    config.train = train_config()
    config.train.batch_size = 128  # MAD: 128
    config.train.lr = 5e-4  # MAD's default (its sweep: 1e-4, 5e-4, 1e-3)
    config.train.weight_decay = 0.0  # MAD's default (its sweep: 0, 0.1)
    config.train.min_lr_ratio = 1e-6 / 5e-4  # MAD: cosine to 1e-6
    config.train.eval_examples = baseline["num_test"]  # the whole test set
    config.mesh = mesh_config()
    config.distributed = distributed_config()
    return config
