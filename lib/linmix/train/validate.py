"""Config validation: every inconsistency is reported in one line, before anything compiles."""

from __future__ import annotations

import jax
from ml_collections import ConfigDict

from linmix.data import MAD_TASKS, validate_mad_args, validate_mqar_args
from linmix.data.lm import MODES
from linmix.data.shards import read_meta
from linmix.models import ModelConfig
from linmix.parallel.mesh import resolve_sizes

TASKS = ("mqar", "mad", "lm")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field."""


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def validate(config: ConfigDict) -> ModelConfig:
    """Check the whole config and return the ModelConfig it describes."""
    _need(config.task in TASKS, f"task {config.task!r} not in {TASKS}")
    d, tc = config.data, config.train
    try:
        model_cfg = ModelConfig(**config.model.to_dict())
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None
    _need(
        model_cfg.causal,
        f"mixer {model_cfg.mixer!r} is bidirectional (model.causal=False): the {config.task} task "
        "trains a causal LM; use a causal mixer",
    )
    if config.task == "mqar":
        _validate_mqar(d, model_cfg)
    elif config.task == "mad":
        _validate_mad(d, model_cfg)
    else:
        _validate_lm(d, model_cfg)
    _need(tc.steps >= 1, f"train.steps must be >= 1, got {tc.steps}")
    _need(tc.lr > 0, f"train.lr must be > 0, got {tc.lr}")
    _need(tc.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {tc.warmup_steps}")
    _need(0 <= tc.min_lr_ratio <= 1, f"train.min_lr_ratio must be in [0, 1], got {tc.min_lr_ratio}")
    _need(tc.weight_decay >= 0, f"train.weight_decay must be >= 0, got {tc.weight_decay}")
    _need(0 <= tc.b1 < 1 and 0 <= tc.b2 < 1, "train.b1 and train.b2 must lie in [0, 1)")
    for name in (
        "log_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
    ):
        _need(tc[name] >= 1, f"train.{name} must be >= 1, got {tc[name]}")
    _need(
        tc.eval_examples >= (0 if config.task == "lm" else 1),
        f"train.eval_examples must be >= 1 (lm: 0 = all held-out rows), got {tc.eval_examples}",
    )
    _need(tc.batch_size >= 1, f"train.batch_size must be >= 1, got {tc.batch_size}")
    _need(
        tc.batch_size % jax.process_count() == 0,
        f"train.batch_size={tc.batch_size} is not divisible by {jax.process_count()} processes",
    )
    _need(d.worker_count >= 0, f"data.worker_count must be >= 0, got {d.worker_count}")
    _validate_mesh(config, model_cfg)
    return model_cfg


def _validate_mqar(d: ConfigDict, model_cfg: ModelConfig) -> None:
    try:
        validate_mqar_args(
            vocab_size=d.vocab_size,
            seq_len=d.seq_len,
            num_kv_pairs=d.num_kv_pairs,
            num_passes=d.num_passes,
            power_a=d.power_a,
        )
    except ValueError as e:
        raise ConfigError(f"data: {e}") from None
    _need(
        model_cfg.vocab_size >= d.vocab_size,
        f"model.vocab_size={model_cfg.vocab_size} < data.vocab_size={d.vocab_size}",
    )
    _need(d.num_train >= 1 and d.num_test >= 1, "data.num_train and data.num_test must be >= 1")


def _validate_mad(d: ConfigDict, model_cfg: ModelConfig) -> None:
    _need(d.task in MAD_TASKS, f"data.task {d.task!r} not in {sorted(MAD_TASKS)}")
    try:
        validate_mad_args(
            d.task, vocab_size=d.vocab_size, seq_len=d.seq_len, **d.task_options.to_dict()
        )
    except ValueError as e:
        raise ConfigError(f"data: {e}") from None
    _need(
        model_cfg.vocab_size >= d.vocab_size,
        f"model.vocab_size={model_cfg.vocab_size} < data.vocab_size={d.vocab_size}",
    )
    _need(d.num_train >= 1 and d.num_test >= 1, "data.num_train and data.num_test must be >= 1")


def _validate_lm(d: ConfigDict, model_cfg: ModelConfig) -> None:
    try:
        meta = read_meta(d.path)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"data.path: {e}") from None
    vocab = int(meta["tokenizer"]["vocab_size"])
    _need(
        model_cfg.vocab_size >= vocab,
        f"model.vocab_size={model_cfg.vocab_size} is smaller than the corpus vocabulary ({vocab}) "
        f"of {d.path}: set --config.model.vocab_size={vocab}",
    )
    _need(d.mode in MODES, f"data.mode must be one of {MODES}, got {d.mode!r}")
    _need(d.seq_len >= 2, f"data.seq_len must be >= 2, got {d.seq_len}")
    for split in ("train", "valid"):
        _need(
            meta["splits"][split]["tokens"] >= 2,
            f"{d.path}: the {split} split has no document of two or more tokens",
        )


def _validate_mesh(config: ConfigDict, model_cfg: ModelConfig) -> None:
    """Mesh sizes against the devices, the batch and the sequence (LASP-2 shards time)."""
    try:
        sizes = resolve_sizes(config.mesh.to_dict(), jax.device_count())
    except ValueError as e:
        raise ConfigError(f"mesh: {e}") from None
    _need(
        sizes["tensor"] == 1,
        "mesh.tensor must be 1: tensor parallelism is not implemented (use data, fsdp, seq)",
    )
    batch_ways = sizes["data"] * sizes["fsdp"]
    _need(
        config.train.batch_size % batch_ways == 0,
        f"train.batch_size={config.train.batch_size} is not divisible by mesh data x fsdp = "
        f"{batch_ways}",
    )
    T, W = config.data.seq_len, sizes["seq"]
    _need(T % W == 0, f"data.seq_len={T} is not divisible by mesh.seq={W}")
    if W > 1:
        conv = max((int(v) for k, v in model_cfg.mixer_options.items() if k == "conv_size"),
                   default=4)  # fmt: skip
        _need(
            conv <= T // W,
            f"data.seq_len / mesh.seq = {T // W} tokens per shard; LASP-2 needs at least the "
            f"short-conv width ({conv})",
        )
