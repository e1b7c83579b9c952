"""Nothing lost: a run killed with SIGKILL resumes to bitwise the same parameters and metrics;
SIGTERM saves and exits 0; a non-finite step stops with a report and the last good checkpoint
kept (and a restart with a lower learning rate goes on from it); an unreadable checkpoint is set
aside and the next older one restored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linmix.testing.train import final_params, tiny_config
from linmix.train import loop, trainer
from linmix.train.checkpoint import Checkpointer
from linmix.train.guards import NonFiniteError
from linmix.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
CLI = [
    sys.executable, "-m", "linmix.main", "--config=ml_collections_configs/mqar.py:mixer=gla",
    "--config.data.vocab_size=64", "--config.data.seq_len=32", "--config.data.num_kv_pairs=2",
    "--config.data.num_train=512", "--config.data.num_test=16", "--config.model.d_model=32",
    "--config.model.chunk_size=8", "--config.train.batch_size=8", "--config.train.log_every=1",
    "--config.train.eval_every=1000", "--config.train.eval_examples=8",
    "--config.train.progress=False",
]  # fmt: skip


def _cli(workdir: Path, steps: int, every: int = 10) -> list[str]:
    return [*CLI, f"--config.train.steps={steps}", f"--config.train.checkpoint_every={every}",
            f"--workdir={workdir}"]  # fmt: skip


def _env() -> dict:
    return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.time() < end, "timed out waiting for the run"
        time.sleep(0.05)


def _logged_steps(workdir: Path) -> list[int]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def _checkpoints(workdir: Path) -> list[int]:
    d = workdir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def test_sigkill_anywhere_then_same_command_resumes_bitwise(tmp_path):
    steps = 100
    straight = tmp_path / "straight"
    subprocess.run(
        _cli(straight, steps, every=25), cwd=ROOT, env=_env(), check=True, capture_output=True
    )

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(killed, steps, every=25), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _wait_for(lambda: any(s >= 50 for s in _checkpoints(killed)), proc)
    proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: whatever step it was in
    assert proc.wait() == -signal.SIGKILL
    assert _logged_steps(killed)[-1] < steps
    again = subprocess.run(_cli(killed, steps, every=25), cwd=ROOT, env=_env(), capture_output=True,
                           text=True, check=True)  # fmt: skip
    assert "resuming from checkpoint" in again.stdout

    a, b = read_metrics(straight), read_metrics(killed)
    assert [r["step"] for r in b] == list(range(1, steps + 1))
    for ra, rb in zip(a, b, strict=True):
        assert ra["loss"] == rb["loss"] and ra["grad_norm"] == rb["grad_norm"], ra["step"]
    (sa, pa), (sb, pb) = final_params(straight), final_params(killed)
    assert sa == sb == steps
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_array_equal(x, y)


def test_sigterm_saves_a_checkpoint_and_exits_zero(tmp_path):
    proc = subprocess.Popen(_cli(tmp_path, 1_000_000, every=100_000), cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    _wait_for(lambda: len(_logged_steps(tmp_path)) >= 3, proc)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert time.time() - t0 < 30  # well inside a typical grace period
    stopped = _checkpoints(tmp_path)[-1]
    assert stopped == _logged_steps(tmp_path)[-1] >= 3  # saved the step it stopped at
    assert "stop signal received" in out + err
    resumed = subprocess.run(_cli(tmp_path, stopped + 2), cwd=ROOT, env=_env(),
                             capture_output=True, text=True, check=True)  # fmt: skip
    assert f"resuming from checkpoint at step {stopped}" in resumed.stdout
    assert _checkpoints(tmp_path)[-1] == stopped + 2


def _poison_step(at: int):
    """A train step whose step `at` (1-based) has a NaN loss and a NaN gradient."""
    clean = trainer.train_step

    def step(state, batch, **kw):
        new_state, metrics = clean(state, batch, **kw)
        bad = state.step + 1 == at
        flags = metrics["grads_finite"].at[0].set(metrics["grads_finite"][0] & ~bad)
        return new_state, {**metrics, "loss": jnp.where(bad, jnp.nan, metrics["loss"]),
                           "finite": metrics["finite"] & ~bad, "grads_finite": flags}  # fmt: skip

    return step


def test_nonfinite_step_stops_with_report_and_keeps_last_good(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "train_step", _poison_step(at=7))  # the step the loop compiles
    with pytest.raises(NonFiniteError, match=r"step 7: loss=nan; non-finite gradients in \.embed"):
        loop.run(tiny_config(), tmp_path)
    report = json.loads((tmp_path / "nonfinite.json").read_text())
    assert report["step"] == 7 and report["nonfinite_grads"] == [".embed.embedding.value"]
    assert _checkpoints(tmp_path) == [4]  # step 7's state was never saved
    assert [r["step"] for r in read_metrics(tmp_path)] == [2, 4, 6]

    monkeypatch.undo()  # restart with a lower learning rate: resumes from the good checkpoint
    result = loop.run(tiny_config(lr=1e-3), tmp_path)
    assert result["step"] == 8 and np.isfinite(result["loss"])
    assert _checkpoints(tmp_path) == [4, 8]


def test_train_step_flags_nonfinite_gradients():
    from flax import nnx

    from linmix.models import ModelConfig
    from linmix.train.state import init_state, make_optimizer
    from linmix.train.step import train_step

    nnx.set_graph_mode(False)
    tx = make_optimizer(lr=1e-3, warmup_steps=0, steps=2, min_lr_ratio=0.0, weight_decay=0.0,
                        b1=0.9, b2=0.98, clip_norm=1.0)  # fmt: skip
    cfg = ModelConfig(vocab_size=32, d_model=8, mixer="gla")
    state = jax.jit(lambda: init_state(cfg, tx, 0))()
    batch = {"inputs": jnp.ones((2, 8), jnp.int32), "targets": jnp.ones((2, 8), jnp.int32)}
    step = jax.jit(lambda state: train_step(state, batch, tx=tx)[1])
    ok = step(state)
    assert bool(ok["finite"]) and bool(ok["grads_finite"].all())
    scale = state.model.norm.scale
    scale[...] = jnp.full_like(scale[...], jnp.inf)
    bad = step(state)
    assert not bool(bad["finite"]) and not bool(bad["grads_finite"].all())


def test_unreadable_checkpoint_is_set_aside_and_an_older_one_restored(tmp_path, monkeypatch):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    loop.run(tiny_config(steps=12), straight)
    save = Checkpointer.save

    def save_or_die(self, step, *args, **kw):
        if step == 10:
            raise KeyboardInterrupt("simulated kill")
        return save(self, step, *args, **kw)

    monkeypatch.setattr(Checkpointer, "save", save_or_die)
    with pytest.raises(KeyboardInterrupt):
        loop.run(tiny_config(steps=12), broken)  # dies in step 10: checkpoints 4 and 8
    monkeypatch.undo()
    for f in (broken / "checkpoints" / "8").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # a save cut short
    leftover = broken / "checkpoints" / "12.orbax-checkpoint-tmp-1"
    leftover.mkdir()  # an unfinished save's temporary directory: never a candidate
    (leftover / "junk").write_text("partial")

    loop.run(tiny_config(steps=12), broken)  # resumes from 4, redoes 5..12
    assert [p.name.split(".")[0] for p in (tmp_path / "broken" / "checkpoints_corrupt").iterdir()
            ] == ["8"]  # fmt: skip
    (sa, pa), (sb, pb) = final_params(straight), final_params(broken)
    assert sa == sb == 12
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_array_equal(x, y)
    a, b = read_metrics(straight), read_metrics(broken)
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
