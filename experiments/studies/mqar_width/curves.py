"""GLA and RetNet on MQAR: learning curves by learning rate, output gate and budget.

    python experiments/studies/mqar_width/curves.py              # run what is missing, then plot
    python experiments/studies/mqar_width/curves.py --plot-only

Every run is a run of the CPU MQAR grid (`ml_collections_configs/ablations/mqar.py:preset=cpu`:
T=64, 4 pairs, d=64, BaseConv then the mixer, 1000 steps of batch 64) with the changes named
below. Runs go to runs/sweeps/mqar_cpu (the grid's own runs are reused: a finished run is
skipped, an interrupted one resumes); their metrics are copied to results/curves/ and plotted
to curves.png (held-out accuracy against training examples seen).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

from linmix import sweep

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
GRID = f"{ROOT}/ml_collections_configs/ablations/mqar.py:preset=cpu"
OUT = ROOT / "runs" / "sweeps" / "mqar_cpu"

# name -> (mixer, lr, changes to the grid's run); names without changes are grid runs.
CURVES = {
    "gla_lr3e-3": ("gla", 3e-3, {}),
    "gla_lr1e-2": ("gla", 1e-2, {}),
    "gla_lr1e-2_4x_steps": ("gla", 1e-2, {"train.steps": 4000, "train.eval_every": 500,
                                          "train.checkpoint_every": 500}),  # fmt: skip
    "gla_lr1e-2_no_output_gate": ("gla", 1e-2, {"model.mixer_options.use_output_gate": False}),
    "retnet_lr3e-3": ("retnet", 3e-3, {}),
    "retnet_lr1e-2": ("retnet", 1e-2, {}),
    "linear_attn_lr1e-2": ("linear_attn", 1e-2, {}),
}


def curve_runs() -> dict[str, sweep.Run]:
    grid = {(r.mixer, r.lr): r for r in sweep.expand(sweep.load_ablation(GRID)) if r.width == 64}
    runs = {}
    for name, (mixer, lr, changes) in CURVES.items():
        run = grid[(mixer, lr)]
        if changes:
            run = dataclasses.replace(run, name=f"{run.name}_{name}",
                                      overrides={**run.overrides, **changes})  # fmt: skip
            run = sweep.checked(run)
        runs[name] = run
    return runs


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, records in curves.items():
        evals = [(r["step"] * 64, r["eval_accuracy"]) for r in records if "eval_accuracy" in r]
        ax.plot(*zip(*evals, strict=True), marker="o", ms=3, label=name)
    ax.set(xlabel="training examples seen", ylabel="held-out accuracy", xscale="log",
           title="MQAR T=64, 4 pairs, d=64 (BaseConv + mixer)")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plot-only", action="store_true")
    args = p.parse_args()
    runs = curve_runs()
    if not args.plot_only:
        sweep.run_local(list(runs.values()), OUT)
    saved = HERE / "results" / "curves"
    saved.mkdir(parents=True, exist_ok=True)
    curves = {}
    for name, run in runs.items():
        if (OUT / run.name / "metrics.jsonl").exists():
            shutil.copy(OUT / run.name / "metrics.jsonl", saved / f"{name}.jsonl")
        if (saved / f"{name}.jsonl").exists():
            curves[name] = read_metrics_file(saved / f"{name}.jsonl")
    plot(curves, HERE / "curves.png")
    final = {n: [r for r in c if "eval_accuracy" in r][-1] for n, c in curves.items()}
    print(json.dumps({n: (r["step"], r["eval_accuracy"]) for n, r in final.items()}, indent=1))


def read_metrics_file(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    main()
