"""CLI: bad configs fail with one line naming the problem, before anything compiles."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CFG = "--config=ml_collections_configs/mqar.py"


@pytest.mark.parametrize(
    "args, needle",
    [
        ([f"{CFG}:mixer=nope"], "unknown mixer 'nope'"),
        ([f"{CFG}:bogus=1"], "config variant 'bogus=1'"),
        ([CFG, "--config.train.stepz=3"], "unknown config key 'stepz'"),
        ([f"{CFG}:mixer=gla", "--config.model.mixer_options.expand_q=1"], "expand_q"),
        ([CFG, "--config.data.seq_len=63"], "seq_len must be even"),
        ([CFG, "--config.data.num_kv_pairs=20"], "Too many key-value pairs"),
        ([CFG, "--config.model.num_layers=3", "--config.model.layer_pattern=LA"], "layer_pattern"),
        ([CFG, "--config.train.lr=-1.0"], "train.lr"),
        ([CFG, "--config.mesh.seq=3"], "mesh: mesh {'data': -1, 'fsdp': 1, 'seq': 3"),
        ([CFG, "--config.mesh.tensor=2"], "tensor parallelism is not implemented"),
        ([CFG, "--config.mesh.seq=8", "--config.data.seq_len=60"], "not divisible by mesh.seq"),
        ([CFG, "--config.mesh.fsdp=8", "--config.train.batch_size=4"], "data x fsdp = 8"),
    ],
)
def test_bad_config_one_line_error(tmp_path, args, needle):
    # Compilation would log through absl/XLA; a failing config must stop before it.
    proc = subprocess.run(
        [sys.executable, "-m", "linmix.main", *args, f"--workdir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("linmix: error: "), proc.stderr
    assert needle in lines[0]
    assert not (tmp_path / "checkpoints").exists()
