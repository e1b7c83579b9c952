"""A multi-process run on one machine: 2 processes x 4 CPU devices joined by
`jax.distributed.initialize()` (`--config.distributed.*`), batch split across the processes
(data=2), each sequence over the 4 devices of a process (seq=4). Both processes finish, process 0
writes the metrics, the checkpoint written by both restores in a resumed 2-process run."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(workdir: Path, steps: int) -> list[subprocess.CompletedProcess]:
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "linmix.main",
                "--config=ml_collections_configs/mqar.py:mixer=gla",
                "--config.distributed.enabled=True",
                f"--config.distributed.coordinator_address=localhost:{port}",
                "--config.distributed.num_processes=2",
                f"--config.distributed.process_id={i}",
                "--config.mesh.seq=4",
                f"--config.train.steps={steps}",
                "--config.train.warmup_steps=2",
                "--config.train.log_every=4",
                "--config.train.eval_every=8",
                "--config.train.checkpoint_every=8",
                "--config.train.eval_examples=128",
                "--config.train.progress=False",
                f"--workdir={workdir}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-3000:]
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


@pytest.mark.slow  # four processes start and compile (~1.5 min on 2 cores)
def test_two_processes_train_checkpoint_and_resume(tmp_path):
    _launch(tmp_path, 8)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8]  # one writer: process 0
    assert all(np.isfinite(r["loss"]) for r in records) and "eval_accuracy" in records[-1]
    resumed = _launch(tmp_path, 12)
    assert all("resuming from checkpoint at step 8" in r.stdout for r in resumed)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8, 12]
    assert records[-1]["loss"] < records[0]["loss"]
