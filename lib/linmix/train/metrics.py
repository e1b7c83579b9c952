"""Metrics to `<workdir>/metrics.jsonl` (one object per log step) and TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

from tensorboardX import SummaryWriter


class MetricWriter:
    """Append-only JSONL + TensorBoard writer that stays consistent across resumes.

    On resume from step `start`, lines logged after the checkpoint (by a run that was killed
    before its next save) are dropped, so the file reads as one uninterrupted run. In a
    multi-process run only the writer with `enabled=True` (process 0) touches the files.
    """

    def __init__(self, workdir: str | Path, *, start_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(workdir) / "metrics.jsonl"
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(start_step)
        self.tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut off by a crash mid-write
        self.path.write_text("".join(f"{line}\n" for line in kept))

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.enabled:
            self.tb.close()


def _plain(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def read_metrics(workdir: str | Path) -> list[dict]:
    path = Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
