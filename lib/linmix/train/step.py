"""Pure train and eval steps: functions of (state, batch), jitted by the loop.

Logits are computed only at supervised positions (targets != IGNORE_INDEX) when the loop knows a
static bound `max_targets` on their number per batch: the loss is identical, and with a large
vocabulary and sparse supervision (MQAR: N of T positions) the vocabulary projection, which
dominates the step, shrinks by T/N.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from linmix.data import IGNORE_INDEX
from linmix.train.state import TrainState


def supervised_logits(model, batch: dict, max_targets: int | None):
    """(logits_ME, targets_M, mask_M, example_M) over the supervised positions of the batch."""
    h_BTD = model.hidden(batch["inputs"], segment_ids=batch.get("segment_ids"))
    b, t, d = h_BTD.shape
    targets_N = batch["targets"].reshape(-1)
    mask_N = targets_N != IGNORE_INDEX
    example_N = jnp.arange(b * t, dtype=jnp.int32) // t
    h_ND = h_BTD.reshape(-1, d)
    if max_targets is not None and max_targets < b * t:
        # Static-size gather of the supervised rows; padding rows are masked out below.
        (idx_M,) = jnp.nonzero(mask_N, size=max_targets, fill_value=0)
        valid_M = jnp.arange(max_targets) < mask_N.sum()
        h_ND, targets_N, example_N = h_ND[idx_M], targets_N[idx_M], example_N[idx_M]
        mask_N = valid_M & (targets_N != IGNORE_INDEX)
    return model.logits(h_ND), targets_N, mask_N, example_N


def token_loss(model, batch: dict, max_targets: int | None = None):
    """Mean cross-entropy over supervised positions, and their accuracy."""
    logits_ME, targets_M, mask_M, _ = supervised_logits(model, batch, max_targets)
    safe_M = jnp.where(mask_M, targets_M, 0)
    nll_M = optax.softmax_cross_entropy_with_integer_labels(logits_ME, safe_M)
    count = jnp.maximum(mask_M.sum(), 1)
    loss = jnp.where(mask_M, nll_M, 0.0).sum() / count
    correct_M = (logits_ME.argmax(-1) == targets_M) & mask_M
    return loss, {"accuracy": correct_M.sum() / count}


def train_step(
    state: TrainState, batch: dict, *, tx: optax.GradientTransformation, max_targets=None
):
    grad_fn = jax.value_and_grad(token_loss, has_aux=True)
    (loss, aux), grads = grad_fn(state.model, batch, max_targets)
    updates, opt_state = tx.update(grads, state.opt_state, state.model)
    model = optax.apply_updates(state.model, updates)
    grad_norm = optax.tree_utils.tree_norm(grads)
    metrics = {"loss": loss, "grad_norm": grad_norm, **aux}
    # Checked by the loop (see train/guards.py); not logged.
    metrics["finite"] = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    metrics["grads_finite"] = jnp.stack([jnp.isfinite(g).all() for g in jax.tree.leaves(grads)])
    return TrainState(step=state.step + 1, model=model, opt_state=opt_state), metrics


def eval_step(model, batch: dict, *, max_targets: int | None = None) -> dict:
    """Per-example correct and supervised counts, summed cross-entropy (nats) and, when the batch
    has `target_bytes`, the raw bytes of the predicted tokens; summed by the caller."""
    logits_ME, targets_M, mask_M, example_M = supervised_logits(model, batch, max_targets)
    b = batch["inputs"].shape[0]
    correct_M = (logits_ME.argmax(-1) == targets_M) & mask_M
    nll_M = optax.softmax_cross_entropy_with_integer_labels(
        logits_ME, jnp.where(mask_M, targets_M, 0)
    )
    per_example = functools.partial(jax.ops.segment_sum, segment_ids=example_M, num_segments=b)
    out = {
        "correct_B": per_example(correct_M.astype(jnp.int32)),
        "supervised_B": per_example(mask_M.astype(jnp.int32)),
        "nll_B": per_example(jnp.where(mask_M, nll_M, 0.0)),
    }
    if "target_bytes" in batch:  # raw text bytes of the predicted tokens (bits per byte)
        supervised_BT = batch["targets"] != IGNORE_INDEX
        out["bytes_B"] = jnp.where(supervised_BT, batch["target_bytes"], 0).sum(-1)
    return out
