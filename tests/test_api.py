"""The Python API (`import linmix`): configs as the CLI builds them, models, steps on one's own
batches with the trainer's step function, restoring a run (model or whole train state) and
evaluating it as the trainer does."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx

import linmix
from linmix.data import IGNORE_INDEX
from linmix.testing.train import tiny_config
from linmix.train.validate import ConfigError

nnx.set_graph_mode(False)


def test_get_config_like_the_cli():
    config = linmix.get_config("mqar:mixer=gla", {"train.steps": 7, "model.d_model": 32})
    assert config.model.mixer == "gla" and config.train.steps == 7 and config.model.d_model == 32
    from_file = linmix.get_config("ml_collections_configs/mqar.py:mixer=gla", {"train.steps": 7})
    assert from_file.model.to_dict() == linmix.get_config("mqar:mixer=gla").model.to_dict()
    with pytest.raises(KeyError):
        linmix.get_config("mqar", {"train.stepz": 1})  # locked: a typo is an error
    with pytest.raises(ConfigError, match="train.lr"):
        linmix.get_config("mqar", {"train.lr": -1.0})
    with pytest.raises(ValueError, match="expected one of"):
        linmix.get_config("nope")


def test_build_from_a_model_config_or_a_run_config():
    cfg = linmix.ModelConfig(mixer="gla", d_model=32, num_layers=2, num_heads=2, vocab_size=64)
    model = linmix.build(cfg)
    assert sum(x.size for x in jax.tree.leaves(model)) == linmix.parameter_count(cfg)
    run_model = linmix.build(tiny_config(), seed=1)
    assert run_model.embed.num_embeddings == 64


def _batch(rng, b=8, t=16, vocab=64):
    inputs = rng.integers(0, vocab, (b, t)).astype(np.int32)
    targets = np.roll(inputs, -1, axis=1)  # next token; the last position unsupervised
    targets[:, -1] = IGNORE_INDEX
    return {"inputs": inputs, "targets": targets}


def test_trainer_steps_on_own_batches():
    trainer = linmix.Trainer(tiny_config(lr=1e-2, warmup_steps=0, steps=40))
    state = trainer.init()
    batch = _batch(np.random.default_rng(0))
    losses = []
    for _ in range(12):
        state, metrics = trainer.step(state, batch)
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 12 and losses[-1] < 0.8 * losses[0]  # it learns the batch
    bad = {**batch, "inputs": batch["inputs"] + 64}
    with pytest.raises(ValueError, match="outside the vocabulary"):
        trainer.step(state, bad)
    with pytest.raises(ValueError, match="\\[B, T\\]"):
        trainer.step(state, {**batch, "targets": batch["targets"][:, :-1]})
    with pytest.raises(ValueError, match="'inputs' and 'targets'"):
        trainer.step(state, {"inputs": batch["inputs"]})
    with pytest.raises(ValueError, match="non-decreasing"):
        seg = np.tile(np.arange(16)[::-1], (8, 1)).astype(np.int32)
        trainer.step(state, {**batch, "segment_ids": seg})


def test_load_model_or_train_state_and_evaluate_like_the_trainer(tmp_path):
    config = tiny_config()
    linmix.fit(config, tmp_path / "run")
    run = linmix.load(tmp_path / "run")
    assert run.step == 8 and run.state is None
    full = linmix.load(tmp_path / "run", train_state=True)
    assert int(full.state.step) == 8
    for a, b in zip(jax.tree.leaves(run.model), jax.tree.leaves(full.model), strict=True):
        np.testing.assert_array_equal(a, b)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    last_eval = [r for r in logged if "eval_accuracy" in r][-1]
    assert last_eval["step"] == 8
    scores = linmix.evaluate(run.model, run.config)
    assert scores["eval_accuracy"] == pytest.approx(last_eval["eval_accuracy"], abs=1e-6)
    # The restored train state continues with the trainer's step function.
    trainer = linmix.Trainer(run.config)
    state, metrics = trainer.step(full.state, _batch(np.random.default_rng(1)))
    assert int(state.step) == 9 and np.isfinite(float(metrics["loss"]))
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 3"):
        linmix.load(tmp_path / "run", step=3)
