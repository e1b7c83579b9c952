"""The training loop: `run(config, workdir)` trains, evaluates, checkpoints and resumes."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import jax
from flax import nnx
from ml_collections import ConfigDict
from tqdm import tqdm

from linmix.models import ModelConfig
from linmix.train.checkpoint import Checkpointer
from linmix.train.guards import Preemption, check_finite
from linmix.train.metrics import MetricWriter
from linmix.train.sharding import put_batch
from linmix.train.tasks import make_task
from linmix.train.trainer import GUARDS, Trainer
from linmix.train.validate import validate

log = logging.getLogger(__name__)


def run(config: ConfigDict, workdir: str | Path) -> dict:
    """Train to `config.train.steps`, resuming from the newest checkpoint in `workdir`."""
    nnx.set_graph_mode(False)
    model_cfg, tc = validate(config), config.train
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    primary = jax.process_index() == 0  # writes metrics and the config; all processes checkpoint
    if primary:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

    task = make_task(config)
    trainer = Trainer(config, task=task, max_targets=task.max_targets)
    if task.description and primary:
        print(f"linmix: {task.description}", flush=True)
    ckpt = Checkpointer(
        workdir / "checkpoints", every=tc.checkpoint_every, keep=tc.keep_checkpoints
    )

    start, state, data_iter = ckpt.restore_latest(trainer.abstract_state(), task.make_iter)
    if start is None:
        state = trainer.init()
        start = 0
    else:
        log.warning("resumed from %s at step %d", ckpt.directory, start)
        print(f"linmix: resuming from checkpoint at step {start}", flush=True)
    _log_model(model_cfg, state.model, primary)
    batch_sh = trainer.batch_sharding

    writer = MetricWriter(workdir, start_step=start, enabled=primary)
    tokens_per_step = task.tokens_per_step
    bar = tqdm(
        total=tc.steps,
        initial=start,
        disable=not (tc.progress and primary),
        unit="step",
        dynamic_ncols=True,
    )
    last = {}
    t_last, step_last = time.perf_counter(), start
    grad_names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(
        trainer.abstract.model)]  # fmt: skip
    unchecked = None  # (step, metrics) of the previous step: its finiteness is read one step late
    with Preemption() as preemption:
        try:
            for step in range(start + 1, tc.steps + 1):
                state, metrics = trainer.train_fn(state, put_batch(next(data_iter), batch_sh))
                if unchecked is not None:  # the previous step is done by now: no pipeline stall
                    check_finite(*unchecked, grad_names, workdir)
                unchecked = (step, metrics)
                record = {}
                if step % tc.log_every == 0 or step == tc.steps:
                    metrics = jax.device_get(metrics)  # the only host sync between logs
                    now = time.perf_counter()
                    tok_s = tokens_per_step * (step - step_last) / (now - t_last)
                    t_last, step_last = now, step
                    record.update(
                        {k: float(v) for k, v in metrics.items() if k not in GUARDS},
                        tokens_per_s=tok_s,
                    )
                    bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{tok_s:,.0f}")
                preempted = preemption.reached(step, ckpt.manager)
                final = step == tc.steps or preempted
                if final or ckpt.due(step):
                    check_finite(step, metrics, grad_names, workdir)  # never save a bad step
                    unchecked = None
                if step % tc.eval_every == 0 or step == tc.steps:
                    scores = trainer.evaluate(state.model)
                    record.update(scores)
                    shown = " ".join(f"{k}={v:.4f}" for k, v in scores.items())
                    bar.write(f"step {step}: {shown}")
                    t_last = time.perf_counter()  # keep eval time out of the throughput
                if record:
                    writer.write(step, record)
                    last.update(record, step=step)
                ckpt.save(step, state, data_iter, force=final)
                bar.update(1)
                if preempted:
                    bar.write(f"linmix: stop signal received: saved step {step}; rerun the same "
                              "command to resume")  # fmt: skip
                    last.update(step=step, preempted=True)
                    break
        finally:
            bar.close()
            ckpt.wait()
            ckpt.close()
            writer.close()
    return last


def _log_model(model_cfg: ModelConfig, model, primary: bool) -> None:
    n = sum(x.size for x in jax.tree.leaves(model))
    log.info("model %s: %s parameters", model_cfg.mixer, f"{n:,}")
    if primary:
        print(f"linmix: model {model_cfg.mixer}: {n:,} parameters", flush=True)
