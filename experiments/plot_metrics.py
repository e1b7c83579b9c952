"""Plot training loss and the eval metric of one or more runs from their metrics.jsonl (held-out
bits per byte for language-model runs, test accuracy otherwise).

    python experiments/plot_metrics.py runs/mqar runs/gla --out curves.png

Needs matplotlib (`pip install -e ".[plot]"`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from linmix.train.metrics import read_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("curves.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for workdir in args.workdirs:
        records = read_metrics(workdir)
        steps = [r["step"] for r in records]
        ax_loss.plot(steps, [r["loss"] for r in records], label=workdir.name)
        lm = any("eval_bpb" in r for r in records)
        key = "eval_bpb" if lm else "eval_accuracy"
        evals = [(r["step"], r[key]) for r in records if key in r]
        if evals:
            ax_acc.plot(*zip(*evals, strict=True), marker="o", label=workdir.name)
    ax_loss.set(xlabel="step", ylabel="train loss", yscale="log", title="loss")
    if lm:
        ax_acc.set(xlabel="step", ylabel="held-out bits per byte", title="eval bits per byte")
    else:
        ax_acc.set(xlabel="step", ylabel="test accuracy", ylim=(0, 1.02), title="eval accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
