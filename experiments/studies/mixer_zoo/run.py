"""Every causal mixer on the default MQAR job through the CLI: does the loss fall in 50 steps?

    python experiments/studies/mixer_zoo/run.py --steps 50     # writes results/ beside it

Runs `python -m linmix.main --config=ml_collections_configs/mqar.py:mixer=NAME` for each causal
mixer in the registry (paper defaults + the short conv every MQAR run uses), one after another,
and writes `results.json` (per mixer: logged losses, wall seconds, parameters) and `results.md`
(the table for the study README). A mixer whose run fails is recorded with its error, not fatal.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from linmix.models import REGISTRY
from linmix.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[3]


def run_one(name: str, steps: int, workdir: Path) -> dict:
    train = dict(
        steps=steps, warmup_steps=max(1, steps // 5), log_every=max(1, steps // 5),
        eval_every=steps, eval_examples=256, checkpoint_every=steps, progress=False,
    )  # fmt: skip
    cmd = [
        sys.executable, "-m", "linmix.main",
        f"--config=ml_collections_configs/mqar.py:mixer={name}", f"--workdir={workdir}",
        *(f"--config.train.{k}={v}" for k, v in train.items()),
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    row = {"mixer": name, "seconds": round(time.perf_counter() - start, 1)}
    if proc.returncode != 0:
        return {**row, "error": proc.stderr.strip().splitlines()[-1:]}
    records = read_metrics(workdir)
    row["losses"] = [round(r["loss"], 4) for r in records if "loss" in r]
    row["eval_accuracy"] = [r["eval_accuracy"] for r in records if "eval_accuracy" in r][-1]
    row["falls"] = min(row["losses"][1:]) < row["losses"][0] - 0.1
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| mixer | first loss | last loss | min later loss | falls by > 0.1 | eval acc | s |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mixer']} | error: {' '.join(r['error'])} | | | | | |")
            continue
        first, last, low = r["losses"][0], r["losses"][-1], min(r["losses"][1:])
        lines.append(
            f"| {r['mixer']} | {first:.3f} | {last:.3f} | {low:.3f} | "
            f"{'yes' if r['falls'] else 'NO'} | {r['eval_accuracy']:.3f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--mixers", nargs="*", default=None, help="default: every causal mixer")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    names = args.mixers or sorted(n for n, c in REGISTRY.items() if c.causal)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(names, 1):
            row = run_one(name, args.steps, Path(tmp) / name)
            rows.append(row)
            print(f"[{i}/{len(names)}] {json.dumps(row)}", flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "results.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
