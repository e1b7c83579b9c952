"""`Trainer(config)`: what a run compiles, usable from Python on one's own batches.

    trainer = Trainer(config)              # a run config (linmix.configs.mqar / lm), validated
    state = trainer.init()                 # TrainState(step, model, opt_state), sharded
    state, metrics = trainer.step(state, batch)
    scores = trainer.evaluate(state.model) # the task's held-out metrics (eval_*)

A batch is a dict of NumPy (or JAX) arrays with a leading batch dimension B (the config's
`train.batch_size` rows in total, split over processes) and time T:

- `inputs`: int [B, T] token ids in [0, vocab_size);
- `targets`: int [B, T] the token to predict at each position, or `linmix.data.IGNORE_INDEX`
  (-100) where nothing is supervised;
- `segment_ids` (optional): int [B, T], non-decreasing along each row: packed documents, the
  state resets where the id changes (positions restart there too).

`train.loop.run` drives the same object with the task's data, checkpoints and metrics.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from ml_collections import ConfigDict

from linmix.data import IGNORE_INDEX
from linmix.models import ModelConfig
from linmix.parallel import mesh_from_sizes
from linmix.train.sharding import (
    batch_sharding,
    in_mesh,
    put_batch,
    state_shardings,
    with_shardings,
)
from linmix.train.state import TrainState, init_state, make_optimizer
from linmix.train.step import eval_step, train_step
from linmix.train.tasks import Task, make_task
from linmix.train.validate import validate

BATCH_KEYS = ("inputs", "targets", "segment_ids", "target_bytes")
GUARDS = ("finite", "grads_finite")  # step outputs the loop's guards read, not metrics


class Trainer:
    """The optimizer, mesh, shardings and jitted train / eval steps of a run config.

    `max_targets` bounds the supervised positions per batch so that the loss gathers only those
    rows (the task's bound when the loop reads the task's own data); None (the default for
    one's own batches) computes the dense loss, which is the same number.
    """

    def __init__(
        self, config: ConfigDict, *, task: Task | None = None, max_targets: int | None = None
    ):
        self.config = config
        self.model_config: ModelConfig = validate(config)
        tc = config.train
        self.tx = make_optimizer(
            lr=tc.lr,
            warmup_steps=tc.warmup_steps,
            steps=tc.steps,
            min_lr_ratio=tc.min_lr_ratio,
            weight_decay=tc.weight_decay,
            b1=tc.b1,
            b2=tc.b2,
            clip_norm=tc.clip_norm,
        )
        self.init_fn = functools.partial(init_state, self.model_config, self.tx, config.seed)
        self.mesh = mesh_from_sizes(config.mesh.to_dict(), explicit=False)
        self.abstract = jax.eval_shape(self.init_fn)
        self.state_sharding = state_shardings(self.abstract, self.mesh)
        self.batch_sharding = batch_sharding(self.mesh)
        self.max_targets = max_targets
        self._task = task
        self.train_fn = jax.jit(
            in_mesh(self.mesh, functools.partial(train_step, tx=self.tx, max_targets=max_targets)),
            in_shardings=(self.state_sharding, self.batch_sharding),
            out_shardings=(self.state_sharding, None),
            donate_argnums=0,
        )
        self.eval_fn = jax.jit(
            in_mesh(self.mesh, functools.partial(eval_step, max_targets=max_targets)),
            in_shardings=(self.state_sharding.model, self.batch_sharding),
            out_shardings=jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec()),
        )

    @property
    def task(self) -> Task:
        """The config's task (its data is opened on first use)."""
        if self._task is None:
            self._task = make_task(self.config)
        return self._task

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and target shardings of the train state (for a sharded restore)."""
        return with_shardings(self.abstract, self.state_sharding)

    def init(self) -> TrainState:
        """The initial train state (a pure function of `config.seed`), laid out on the mesh."""
        return jax.jit(self.init_fn, out_shardings=self.state_sharding)()

    def step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """One optimizer step on `batch` (this process's rows); `state` is donated: use the
        returned one. Metrics: loss, accuracy, grad_norm."""
        state, metrics = self.train_fn(state, self.put(batch))
        return state, {k: v for k, v in metrics.items() if k not in GUARDS}

    def evaluate(self, model) -> dict[str, float]:
        """The task's held-out metrics for `model` (eval_accuracy; eval_loss, eval_ppl, eval_bpb
        for language models)."""
        return self.task.evaluate(self.eval_fn, model, self.batch_sharding)

    def put(self, batch: dict) -> dict:
        """Check a host batch against the config and lay it out on the mesh."""
        check_batch(batch, self.model_config.vocab_size)
        return put_batch(batch, self.batch_sharding)


def check_batch(batch: dict, vocab_size: int) -> None:
    """A clear ValueError for a batch the step cannot use (see the module docstring)."""
    unknown = sorted(set(batch) - set(BATCH_KEYS))
    if unknown or "inputs" not in batch or "targets" not in batch:
        raise ValueError(
            f"a batch is a dict with 'inputs' and 'targets' (optional 'segment_ids', "
            f"'target_bytes'); got keys {sorted(batch)}"
        )
    shape = np.shape(batch["inputs"])
    for name in BATCH_KEYS:
        if name not in batch:
            continue
        value = np.asarray(batch[name])
        if value.shape != shape or len(shape) != 2:
            raise ValueError(f"batch['{name}'] must be [B, T] like inputs, got {value.shape}")
        if not np.issubdtype(value.dtype, np.integer):
            raise ValueError(f"batch['{name}'] must hold integers, got {value.dtype}")
    inputs, targets = np.asarray(batch["inputs"]), np.asarray(batch["targets"])
    if inputs.size and (inputs.min() < 0 or inputs.max() >= vocab_size):
        raise ValueError(f"batch['inputs'] has token ids outside the vocabulary [0, {vocab_size})")
    bad = (targets != IGNORE_INDEX) & ((targets < 0) | (targets >= vocab_size))
    if bad.any():
        raise ValueError(
            f"batch['targets'] must be token ids in [0, {vocab_size}) or IGNORE_INDEX "
            f"({IGNORE_INDEX})"
        )
    if "segment_ids" in batch:
        seg = np.asarray(batch["segment_ids"])
        if np.any(seg[:, 1:] < seg[:, :-1]):
            raise ValueError("batch['segment_ids'] must be non-decreasing along each row")
