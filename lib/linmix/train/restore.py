"""Restore a training run from its workdir: `restore(workdir)` -> `Restored(model, config, step,
state)`; the model alone by default, the whole train state (optimizer included) on request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx
from ml_collections import ConfigDict

from linmix.models import LM, ModelConfig
from linmix.train.checkpoint import Checkpointer, from_nested, to_nested
from linmix.train.state import TrainState
from linmix.train.trainer import Trainer


class Restored(NamedTuple):
    model: LM  # the trained parameters
    config: ConfigDict  # the run's config (config.json)
    step: int  # the checkpoint's step
    state: TrainState | None  # step, model and optimizer state; None unless train_state=True


def run_config(workdir: str | Path) -> ConfigDict:
    """The config a run was started with."""
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{workdir} is not a linmix run directory (no config.json)")
    return ConfigDict(json.loads(path.read_text()))


def restore(workdir: str | Path, *, train_state: bool = False, step: int | None = None) -> Restored:
    """The newest checkpoint of a run (or `step`): its model, and with `train_state=True` the full
    train state laid out on the config's mesh, as the trainer would resume it."""
    nnx.set_graph_mode(False)
    config = run_config(workdir)
    ckpt = Checkpointer(Path(workdir) / "checkpoints", every=1, keep=1)
    try:
        steps = ckpt.manager.all_steps()
        if not steps:
            raise FileNotFoundError(f"{workdir} has no checkpoint yet")
        if step is None:
            step = max(steps)
        elif step not in steps:
            raise FileNotFoundError(f"{workdir} has no checkpoint of step {step}; it has {steps}")
        if train_state:
            abstract = Trainer(config).abstract_state()
            shapes = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract)
            target = ocp.args.StandardRestore(to_nested(shapes))
        else:
            target = ocp.args.StandardRestore()  # as saved; only the model is kept
        nested = ckpt.manager.restore(step, args=ocp.args.Composite(state=target)).state
    finally:
        ckpt.close()
    if train_state:
        state = from_nested(abstract, nested)
        return Restored(state.model, config, int(step), state)
    model_cfg = ModelConfig(**config.model.to_dict())
    template = jax.eval_shape(lambda: LM(model_cfg, rngs=nnx.Rngs(0)))
    model = jax.tree.map(jnp.asarray, from_nested(template, nested["model"]))
    return Restored(model, config, int(step), None)
