"""Causal language modelling on a prepared corpus (`python -m linmix.prepare`), any causal mixer.

`get_config("mixer=NAME,size=SIZE,data=PATH")`. Sizes (`SIZES`): `tiny` trains on a CPU in
minutes; `125m`, `340m` and `1.3b` follow the GLA and DeltaNet papers' language-model recipe
(AdamW, peak lr 3e-4 with cosine decay to 10%, 0.5B warmup tokens, weight decay 0.01, gradient
clipping 1, batches of 0.5M tokens as 256 x 2048; 340M on 15B tokens, 1.3B on 100B; 125M is the
GPT-2-small shape on 2.5B tokens). The vocabulary is the corpus's: 256 for byte-level corpora,
`--config.model.vocab_size=N` for a BPE corpus (validation names the number).
"""

from __future__ import annotations

from ml_collections import ConfigDict

from linmix.configs.common import (
    distributed_config,
    implementations_config,
    mesh_config,
    parse_variant,
    short_conv_options,
    train_config,
)
from linmix.models import REGISTRY

VARIANTS = {"mixer": "attention", "size": "tiny", "data": "data/shakespeare"}

# Large recipe: 0.5M-token batches, warmup 0.5B tokens = 1000 steps.
_PAPER = dict(seq_len=2048, batch_size=256, lr=3e-4, warmup_steps=1000, weight_decay=0.01,
              b2=0.95, min_lr_ratio=0.1, mlp_ratio=8 / 3, dtype="bfloat16",
              remat="full")  # fmt: skip

SIZES = {
    # CPU: 0.7M parameters, 128-byte contexts, 1000 steps of 2048 bytes (~0.4 s each on 2 cores).
    "tiny": dict(
        d_model=128,
        num_layers=4,
        num_heads=2,
        seq_len=128,
        batch_size=16,
        steps=1000,
        lr=3e-3,
        warmup_steps=100,
        weight_decay=0.1,
        b2=0.99,
        min_lr_ratio=0.1,
        mlp_ratio=2.0,
        dtype="float32",
        remat="none",
    ),  # fmt: skip
    "125m": dict(_PAPER, d_model=768, num_layers=12, num_heads=12, steps=4_768),  # 2.5B tokens
    "340m": dict(_PAPER, d_model=1024, num_layers=24, num_heads=8, steps=28_610),  # 15B tokens
    "1.3b": dict(_PAPER, d_model=2048, num_layers=24, num_heads=16, steps=190_735),  # 100B tokens
}


def get_config(arg: str | None = None) -> ConfigDict:
    variant = parse_variant(arg, VARIANTS)
    mixer, size = variant["mixer"], variant["size"]
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; known: {list(SIZES)}")
    if mixer in REGISTRY and not REGISTRY[mixer].causal:
        raise ValueError(f"mixer {mixer!r} is bidirectional; a language model needs a causal one")
    s = SIZES[size]
    options = short_conv_options(mixer)
    config = ConfigDict()
    config.seed = 0
    config.task = "lm"
    config.data = ConfigDict(
        dict(
            path=variant["data"],  # a prepared corpus directory
            seq_len=s["seq_len"],  # tokens per row
            mode="pack",  # "pack": whole documents, state reset at each; "cut": concatenate
            worker_count=0,  # grain worker processes (0: in-process)
        )
    )
    config.model = ConfigDict(
        dict(
            vocab_size=256,  # the corpus's vocabulary (bytes); set it for a BPE corpus
            d_model=s["d_model"],
            num_layers=s["num_layers"],
            num_heads=s["num_heads"],
            mixer=mixer,
            layer_pattern="L",
            mixer_options=options,
            mlp_ratio=s["mlp_ratio"],
            norm_eps=1e-6,
            tie_embeddings=False,
            dtype=s["dtype"],
            remat=s["remat"],
            chunk_size=64,
            implementations=implementations_config(),
            causal=True,
        )
    )
    config.train = train_config()
    for key in ("steps", "batch_size", "lr", "warmup_steps", "weight_decay", "b2", "min_lr_ratio"):
        config.train[key] = s[key]
    config.train.b1 = 0.9
    config.train.eval_every = 500
    config.train.eval_examples = 0  # held-out rows per evaluation; 0: all of them
    config.train.checkpoint_every = 500
    config.train.log_every = 50
    config.mesh = mesh_config()
    config.distributed = distributed_config()
    return config
