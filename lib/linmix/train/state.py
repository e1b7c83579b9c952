"""Train state and optimizer: a pytree of (step, model, optimizer state)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from linmix.models import LM, ModelConfig

DECAYED = ("kernel", "embedding")  # weight decay on matrices, not on norms, biases or gates' bias


class TrainState(NamedTuple):
    step: jax.Array
    model: LM
    opt_state: Any


def learning_rate(*, lr: float, warmup_steps: int, steps: int, min_lr_ratio: float):
    """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at `steps`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=lr,
        warmup_steps=warmup_steps,
        decay_steps=max(steps, warmup_steps + 1),
        end_value=lr * min_lr_ratio,
    )


def _decay_mask(model: Any) -> Any:
    def decayed(path, _):
        return any(getattr(k, "name", None) in DECAYED for k in path)

    return jax.tree_util.tree_map_with_path(decayed, model)


def make_optimizer(
    *,
    lr: float,
    warmup_steps: int,
    steps: int,
    min_lr_ratio: float,
    weight_decay: float,
    b1: float,
    b2: float,
    clip_norm: float,
) -> optax.GradientTransformation:
    """AdamW with warmup+cosine and global-norm clipping (clip_norm <= 0 disables clipping)."""
    schedule = learning_rate(
        lr=lr, warmup_steps=warmup_steps, steps=steps, min_lr_ratio=min_lr_ratio
    )
    adamw = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay, mask=_decay_mask)
    if clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(clip_norm), adamw)
    return adamw


def init_state(model_cfg: ModelConfig, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """Pure function of the seed: jit it, or `jax.eval_shape` it for an abstract state."""
    model = LM(model_cfg, rngs=nnx.Rngs(seed))
    return TrainState(step=jnp.zeros((), jnp.int32), model=model, opt_state=tx.init(model))
