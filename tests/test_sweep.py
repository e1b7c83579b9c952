"""`python -m linmix.sweep` on the tiny grid: runs, skips, resumes, reports, writes job scripts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import linmix
from linmix import sweep

ROOT = Path(__file__).resolve().parents[1]
ABLATION = ROOT / "ml_collections_configs" / "ablations" / "mqar.py"
TINY = f"{ABLATION}:preset=tiny"


def run_sweep(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLA_FLAGS": ""}  # one CPU device: the runs compile faster
    return subprocess.run(
        [sys.executable, "-m", "linmix.sweep", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def final(workdir: Path) -> float:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "eval_accuracy" in r][-1]["eval_accuracy"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "mqar"
    done = run_sweep(f"--config={TINY}", f"--out={out}")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return out, done.stdout


def test_expand_names_and_flags():
    runs = sweep.expand(sweep.load_ablation(TINY))
    assert [r.name for r in runs] == [
        "gla_d16_lr1e-03_s0_T16_kv2", "gla_d16_lr1e-02_s0_T16_kv2",
        "attention_d16_lr1e-03_s0_T16_kv2", "attention_d16_lr1e-02_s0_T16_kv2",
    ]  # fmt: skip
    assert all(r.steps == 6 for r in runs)
    command = runs[0].command("w")
    assert command[3] == "--config=ml_collections_configs/mqar.py:mixer=gla"
    for flag in (
        "--config.train.lr=0.001",
        "--config.model.tie_embeddings=True",
        "--config.model.mlp_ratio=0.0",
        "--config.data.seq_len=16",
        "--workdir=w",
    ):
        assert flag in command  # fmt: skip
    assert sweep.flag_value(False) == "False" and sweep.flag_value(1e-4) == "0.0001"
    assert sweep.lr_tag(0.000464) == "4.64e-04"
    full = sweep.expand(sweep.load_ablation(str(ABLATION)), validate=False)
    assert len(full) == 12 * 3 * 4 * 3
    tasks = sweep.load_ablation(str(ABLATION)).grid.tasks
    assert [t["overrides"]["train.batch_size"] for t in tasks] == [512, 512, 256]
    assert [t["overrides"]["train.steps"] for t in tasks] == [12500, 12500, 25000]


@pytest.mark.parametrize(
    "preset, count, pattern", [("", 432, "L"), ("conv", 432, "CL"), ("cpu", 48, "CL")]
)
def test_presets_expand_to_valid_runs(preset, count, pattern):
    """The paper grid, its conv-first form and the CPU grid: sizes, and the layer pattern of the
    built configs (the CPU grid's every run validated, the others' first)."""
    ablation = sweep.load_ablation(f"{ABLATION}:preset={preset}")
    runs = sweep.expand(ablation, validate=preset == "cpu")
    assert len(runs) == count and len({r.name for r in runs}) == count
    first = sweep.checked(runs[0])
    assert first.overrides.get("model.layer_pattern", "L") == pattern
    zoology = {1e-4, 4.64e-4, 2.15e-3, 1e-2}  # logspace(-4, -2, 4), 3 significant digits
    assert {r.lr for r in runs} == ({3e-3, 1e-2} if preset == "cpu" else zoology)


@pytest.mark.parametrize("preset, count, steps", [("", 108, 20_000), ("cpu", 36, 1000)])
def test_mad_grid_runs_each_task_from_its_own_config(preset, count, steps):
    """The MAD grid: every run validated, built from `mad:task=NAME` with that task's data."""
    runs = sweep.expand(sweep.load_ablation(f"{ROOT}/ml_collections_configs/ablations/mad.py"
                                            f":preset={preset}"))  # fmt: skip
    assert len(runs) == count
    for run in runs:
        assert run.spec == f"mad:task={run.task},mixer={run.mixer}"
        config = linmix.get_config(run.spec, run.overrides)
        assert config.data.task == run.task and config.model.mixer == run.mixer
        want = steps if run.task != "memorization" else config.data.num_train * (
            200 if preset == "" else 50) // config.train.batch_size  # fmt: skip
        assert run.steps == want, run.name
    assert (
        run.command("w")[3] == f"--config=ml_collections_configs/mad.py:task={run.task},"
        f"mixer={run.mixer}"
    )


def test_sweep_runs_everything_and_reports_best_over_lrs(swept):
    out, stdout = swept
    assert "4 ran, 0 skipped, 0 failed" in stdout, stdout
    assert "[4/4] attention_d16_lr1e-02_s0_T16_kv2 done in" in stdout
    assert (out / sweep.PLOT).stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    table = (out / sweep.TABLE).read_text()
    for mixer in ("gla", "attention"):
        finals = {lr: final(out / f"{mixer}_d16_lr{lr}_s0_T16_kv2") for lr in ("1e-03", "1e-02")}
        (cell,) = [c for c in results["cells"] if c["mixer"] == mixer]
        assert cell["eval_accuracy"] == max(finals.values())
        assert finals[sweep.lr_tag(cell["best_lr"])] == max(finals.values())
        row = next(line for line in table.splitlines() if line.startswith(f"| {mixer} |"))
        assert f"{max(finals.values()):.3f} (lr {sweep.lr_tag(cell['best_lr'])})" in row


def test_rerun_skips_finished_runs(swept):
    out, _ = swept
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.jsonl")}
    again = run_sweep(f"--config={TINY}", f"--out={out}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 finished earlier (skipped), 0 to run" in again.stdout
    assert again.stdout.count("skipped (finished earlier)") == 4
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.jsonl")} == mtimes


def test_unfinished_run_resumes_from_its_checkpoint(swept):
    out, _ = swept
    # A run killed after its step-3 checkpoint: no done marker, no step-6 checkpoint or metrics.
    workdir = out / "attention_d16_lr1e-02_s0_T16_kv2"
    (workdir / sweep.DONE).unlink()
    shutil.rmtree(workdir / "checkpoints" / "6")
    records = (workdir / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in records if json.loads(line)["step"] <= 3]
    (workdir / "metrics.jsonl").write_text("".join(f"{line}\n" for line in kept))
    resumed = run_sweep(f"--config={TINY}", f"--out={out}", "--only=attention_d16_lr1e-02")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "0 finished earlier (skipped), 1 to run" in resumed.stdout
    assert "(resuming from checkpoint at step 3)" in resumed.stdout, resumed.stdout
    log = (workdir / "sweep_stdout.log").read_text()
    assert log.count("resuming from checkpoint at step 3") == 1
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").open()]
    assert steps[-1] == 6
    assert json.loads((workdir / sweep.DONE).read_text())["steps"] == 6


def test_slurm_mode_writes_one_script_per_run(tmp_path):
    done = run_sweep(f"--config={TINY}", f"--out={tmp_path}", "--mode=slurm")
    assert done.returncode == 0, done.stderr[-3000:]
    scripts = sorted((tmp_path / "jobs").glob("*.sbatch"))
    assert len(scripts) == 4
    text = (tmp_path / "jobs" / "gla_d16_lr1e-02_s0_T16_kv2.sbatch").read_text()
    assert (
        text.startswith("#!/bin/bash") and "#SBATCH --job-name=gla_d16_lr1e-02_s0_T16_kv2" in text
    )
    (line,) = [ln for ln in text.splitlines() if "linmix.main" in ln]
    for flag in (
        "--config=ml_collections_configs/mqar.py:mixer=gla",
        "--config.train.lr=0.01",
        "--config.model.d_model=16",
        "--config.train.steps=6",
        "--config.seed=0",
        f"--workdir={tmp_path}/gla_d16_lr1e-02_s0_T16_kv2",
    ):
        assert flag in line.split()  # fmt: skip
    submit = (tmp_path / "jobs" / "submit_all.sh").read_text()
    assert submit.count("sbatch ") == 4
    assert not any(tmp_path.glob("*/metrics.jsonl"))  # nothing ran
    tpu = run_sweep(f"--config={TINY}", f"--out={tmp_path}", "--mode=tpu", "--only=gla_")
    assert tpu.returncode == 0 and len(list((tmp_path / "jobs").glob("*.sh"))) == 3


def test_bad_grid_fails_up_front(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from linmix.sweep import load_ablation\n\n\ndef get_config(arg=None):\n"
        f"    config = load_ablation({TINY!r})\n"
        "    config.grid.mixers = ['gla', 'nope']\n    return config\n"
    )
    done = run_sweep(f"--config={bad}", f"--out={tmp_path / 'out'}")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("linmix.sweep: error: run nope_d16"), done.stderr
    assert "unknown mixer 'nope'" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    fake = tmp_path / "fake_python"
    fake.write_text("#!/bin/sh\necho 'linmix: error: boom' >&2\nexit 3\n")
    fake.chmod(0o755)
    runs = sweep.expand(sweep.load_ablation(TINY))[:2]
    lines = []
    status = sweep.run_local(
        runs, tmp_path / "out", python=str(fake), log=lambda *a, **k: lines.append(a[0])
    )
    assert status == {r.name: "failed" for r in runs}
    error = (tmp_path / "out" / runs[1].name / sweep.ERROR).read_text()
    assert error.startswith("exit code 3\n") and "linmix: error: boom" in error
    assert "[2/2] gla_d16_lr1e-02_s0_T16_kv2 FAILED (exit 3)" in "\n".join(lines)
    assert lines[-1] == "linmix.sweep: 0 ran, 0 skipped, 2 failed"
