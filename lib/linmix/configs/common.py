"""Config helpers: variant parsing, train defaults, mixer options from the registry."""

from __future__ import annotations

import dataclasses

from ml_collections import ConfigDict

from linmix.models import REGISTRY


def parse_variant(arg: str | None, allowed: dict[str, object]) -> dict[str, object]:
    """'mixer=gla,layers=4' -> {'mixer': 'gla', 'layers': 4}, typed like the defaults."""
    values = dict(allowed)
    for item in filter(None, (arg or "").split(",")):
        key, sep, raw = item.partition("=")
        if not sep or key not in allowed:
            raise ValueError(
                f"config variant {item!r}: expected key=value with key in {sorted(allowed)}"
            )
        default = allowed[key]
        values[key] = type(default)(raw) if default is not None else raw
    return values


def mixer_options(name: str) -> ConfigDict:
    """The mixer's paper-default options, so `--config.model.mixer_options.X=v` is checked."""
    if name not in REGISTRY:
        raise ValueError(f"unknown mixer {name!r}; known: {sorted(REGISTRY)}")
    fields = dataclasses.fields(REGISTRY[name].Options)
    # None means "inherit from the model" (e.g. num_heads); leave those out of the config.
    return ConfigDict({f.name: f.default for f in fields if f.default is not None})


def short_conv_options(name: str) -> ConfigDict:
    """The mixer's paper defaults with its short causal conv on (where it has one)."""
    options = mixer_options(name)
    if "use_short_conv" in options:
        options.use_short_conv = True
    return options


def train_config() -> ConfigDict:
    return ConfigDict(
        dict(
            steps=1000,  # optimizer steps
            batch_size=64,  # global batch (sequences)
            lr=1e-3,  # peak learning rate
            warmup_steps=100,  # linear warmup, then cosine to lr * min_lr_ratio
            min_lr_ratio=0.0,
            weight_decay=0.1,  # AdamW, on matrices and embeddings only
            b1=0.9,
            b2=0.98,
            clip_norm=1.0,  # global-norm clipping; <= 0 disables
            log_every=25,  # steps between metric lines (one host sync per log)
            eval_every=250,  # steps between evaluations (and at the last step)
            eval_examples=1000,  # test examples per evaluation
            checkpoint_every=250,  # steps between checkpoints (and at the last step)
            keep_checkpoints=2,  # newest checkpoints kept
            progress=True,  # tqdm progress bar with tokens/s
        )
    )


def implementations_config() -> ConfigDict:
    """Per-engine op implementation for the model's whole-sequence calls; "" keeps the backend's
    default. E.g. --config.model.implementations.gla=mosaic_gpu (see linmix.ops.dispatch)."""
    return ConfigDict(dict(gla="", delta="", ssm=""))


def mesh_config() -> ConfigDict:
    """Device mesh sizes (one may be -1: the rest of the devices). Batches split over data x fsdp,
    parameters and optimizer state over fsdp (FSDP), time over seq (LASP-2 / LASP-2H)."""
    return ConfigDict(dict(data=-1, fsdp=1, seq=1, tensor=1))


def distributed_config() -> ConfigDict:
    """Multi-process start: `jax.distributed.initialize()` before anything else when enabled.
    Empty / 0 / -1 leave the value to JAX's cluster detection (SLURM, Open MPI, TPU pods)."""
    return ConfigDict(dict(enabled=False, coordinator_address="", num_processes=0, process_id=-1))
