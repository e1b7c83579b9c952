"""linmix from Python: the few calls a notebook needs (also exported by `import linmix`).

    import linmix
    config = linmix.get_config("mqar:mixer=gla", {"train.steps": 200})
    linmix.fit(config, "runs/gla")                   # what `python -m linmix.main` runs
    run = linmix.load("runs/gla")                    # run.model, run.config, run.step
    linmix.evaluate(run.model, run.config)           # {'eval_accuracy': ...}
    model = linmix.build(linmix.ModelConfig(mixer="gla", d_model=64, num_layers=2))
    trainer = linmix.Trainer(config)                 # steps on one's own batches
    state = trainer.init()
    state, metrics = trainer.step(state, {"inputs": x_BT, "targets": y_BT})

Generation: `linmix.generate.generate(model, prompts, max_new_tokens=...)`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from flax import nnx
from ml_collections import ConfigDict

from linmix.models import LM, ModelConfig
from linmix.models import parameter_count as count_from_model_config
from linmix.train.loop import run as fit
from linmix.train.restore import Restored, restore
from linmix.train.trainer import Trainer, check_batch
from linmix.train.validate import validate

__all__ = [
    "LM",
    "ModelConfig",
    "Restored",
    "Trainer",
    "build",
    "check_batch",
    "config_file_module",
    "evaluate",
    "fit",
    "get_config",
    "load",
    "parameter_count",
]

TASK_CONFIGS = ("mqar", "lm", "mad")  # modules of linmix.configs that name a task


def get_config(spec: str, overrides: dict[str, Any] | None = None) -> ConfigDict:
    """A run config, as the CLI's `--config=SPEC --config.KEY=VALUE ...` builds it.

    `spec`: a task name with an optional variant (`"mqar"`, `"lm:mixer=gla,size=tiny"`) or a
    config file (`"ml_collections_configs/lm.py:mixer=gla"`). `overrides`: dotted keys to values
    (`{"train.steps": 200, "model.mixer_options.use_short_conv": True}`). The config is locked
    (an unknown key is an error) and validated (a bad value raises `ConfigError` naming it).
    """
    source, _, variant = spec.partition(":")
    if source.endswith(".py"):
        module = config_file_module(source)
    elif source in TASK_CONFIGS:
        module = importlib.import_module(f"linmix.configs.{source}")
    else:
        raise ValueError(f"config {spec!r}: expected one of {TASK_CONFIGS} or a .py config file")
    config = module.get_config(variant or None)
    config.lock()
    for key, value in (overrides or {}).items():
        *parents, last = key.split(".")
        node = config
        for name in parents:
            node = node[name]
        node[last] = value
    validate(config)
    return config


def config_file_module(path: str | Path):
    """The module of a config file (`ml_collections_configs/*.py`), loaded from its path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    module_spec = importlib.util.spec_from_file_location(f"linmix_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def build(config: ModelConfig | ConfigDict, *, seed: int = 0) -> LM:
    """A freshly initialised LM from a `ModelConfig` or a run config (its `model` part)."""
    nnx.set_graph_mode(False)
    if isinstance(config, ConfigDict):
        config = ModelConfig(**config.model.to_dict())
    return LM(config, rngs=nnx.Rngs(seed))


def load(workdir: str | Path, *, train_state: bool = False, step: int | None = None) -> Restored:
    """A trained run: `Restored(model, config, step, state)` of its newest checkpoint (or
    `step`); `state` (step, model, optimizer state) only with `train_state=True`."""
    return restore(workdir, train_state=train_state, step=step)


def evaluate(model: LM, config: ConfigDict) -> dict[str, float]:
    """`model`'s held-out metrics on the config's task (as the trainer logs them); the compiled
    evaluation is reused across calls with the same config."""
    return _trainer_for(config.to_json_best_effort(sort_keys=True)).evaluate(model)


@functools.lru_cache(maxsize=8)
def _trainer_for(config_json: str) -> Trainer:
    return Trainer(ConfigDict(json.loads(config_json)))


def parameter_count(config: ModelConfig | ConfigDict) -> int:
    """Parameters of the LM a `ModelConfig` or a run config describes (nothing allocated)."""
    if isinstance(config, ConfigDict):
        config = ModelConfig(**config.model.to_dict())
    return count_from_model_config(config)
