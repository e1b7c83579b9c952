"""Byte-level language models on Shakespeare: mixers head to head at matched size and budget.

    python experiments/studies/shakespeare/run.py                       # prepare, train, report
    python experiments/studies/shakespeare/run.py --mixers attention gla --steps 300
    python experiments/studies/shakespeare/run.py --report-only         # table + plot from runs

Every mixer trains `lm.py:mixer=NAME,size=tiny` with the same data order, steps, batch and
learning-rate schedule; its width is the multiple of 16 whose parameter count is closest to
softmax attention's at the tiny size (0.7M). Runs go to runs/shakespeare/<mixer> and resume
(a finished run is skipped). The report compares held-out bits per byte with general-purpose
compressors on the same held-out text, and writes results.json, a Markdown table and
curves.png to results/.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import lzma
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from linmix.configs.lm import get_config
from linmix.data.shards import open_split
from linmix.models import ModelConfig, parameter_count
from linmix.train.metrics import read_metrics

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
MIXERS = ["attention", "gla", "gated_deltanet", "deltanet", "mamba2", "retnet", "linear_attn",
          "hgrn2"]  # fmt: skip


def parameters(mixer: str, d_model: int) -> int:
    model = get_config(f"mixer={mixer},size=tiny").model
    model.d_model = d_model
    return parameter_count(ModelConfig(**model.to_dict()))


def matched_width(mixer: str, target: int) -> tuple[int, int]:
    """(d_model, parameters) closest to `target` over multiples of 16 (heads divide them)."""
    best = None
    for d in range(64, 257, 16):
        try:
            n = parameters(mixer, d)
        except ValueError:  # a width the mixer's head layout cannot take
            continue
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (d, n)
    return best


def compressors(directory: Path) -> dict[str, float]:
    """Bits per byte of gzip -9, xz -9 and bzip2 -9 (byte corpus), two ways: over the whole
    corpus (the usual figure: the compressor sees the held-out plays among the rest), and on the
    held-out plays after the training text (compressed size of train + held-out minus that of
    train alone, per held-out byte: the compressor's counterpart of training on the rest)."""
    train, valid = (open_split(directory, s) for s in ("train", "valid"))
    T, V = (bytes(np.asarray(s.tokens, np.uint8)) for s in (train, valid))
    methods = {
        "gzip -9": lambda d: gzip.compress(d, 9),
        "xz -9": lambda d: lzma.compress(d, preset=9),
        "bzip2 -9": lambda d: bz2.compress(d, 9),
    }
    out = {}
    for name, f in methods.items():
        out[f"{name}, whole corpus"] = 8 * len(f(T + V)) / len(T + V)
        out[f"{name}, held-out after train"] = 8 * (len(f(T + V)) - len(f(T))) / len(V)
    return out


def train(mixer: str, d_model: int, args: argparse.Namespace) -> float:
    workdir = args.runs / mixer
    rows = read_metrics(workdir) if (workdir / "metrics.jsonl").exists() else []
    if rows and rows[-1]["step"] >= args.steps and "eval_bpb" in rows[-1]:
        print(f"{mixer}: finished earlier, skipped")
        return 0.0
    cmd = [
        sys.executable, "-m", "linmix.main",
        f"--config=ml_collections_configs/lm.py:mixer={mixer},size=tiny,data={args.data}",
        f"--config.model.d_model={d_model}", f"--config.train.steps={args.steps}",
        f"--config.train.eval_every={args.eval_every}", "--config.train.progress=False",
        f"--workdir={workdir}",
    ]  # fmt: skip
    print(" ".join(cmd[1:]), flush=True)
    start = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    return time.time() - start


def report(runs: Path, widths: dict, target: int, squeeze: dict, out: Path) -> None:
    results = {"compressors": squeeze, "target_parameters": target, "runs": {}}
    for mixer, (d, n) in widths.items():
        path = runs / mixer / "metrics.jsonl"
        if not path.exists():
            continue
        rows = read_metrics(runs / mixer)
        evals = [r for r in rows if "eval_bpb" in r]
        speed = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
        results["runs"][mixer] = {
            "d_model": d,
            "parameters": n,
            "steps": rows[-1]["step"],
            "eval": [{k: r[k] for k in ("step", "eval_bpb", "eval_loss")} for r in evals],
            "final_bpb": evals[-1]["eval_bpb"] if evals else None,
            "tokens_per_s": float(np.median(speed)) if speed else None,
        }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    lines = ["| mixer | d_model | parameters | steps | held-out bits/byte | tokens/s |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    ranked = sorted(results["runs"].items(), key=lambda kv: kv[1]["final_bpb"] or 99)
    for mixer, r in ranked:
        lines.append(f"| {mixer} | {r['d_model']} | {r['parameters']:,} | {r['steps']} | "
                     f"{r['final_bpb']:.3f} | {r['tokens_per_s']:,.0f} |")  # fmt: skip
    for name, bpb in sorted(squeeze.items(), key=lambda kv: kv[1]):
        lines.append(f"| {name} (compressor) | | | | {bpb:.3f} | |")
    (out / "table").with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _plot(results, out / "curves.png")


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mixer, r in sorted(results["runs"].items()):
        ax.plot([e["step"] for e in r["eval"]], [e["eval_bpb"] for e in r["eval"]], marker="o",
                ms=3, label=f"{mixer} ({r['parameters'] / 1e6:.2f}M)")  # fmt: skip
    whole = [(k, v) for k, v in sorted(results["compressors"].items()) if "whole" in k]
    for (name, bpb), style in zip(whole, (":", "--", "-."), strict=True):
        ax.axhline(bpb, color="gray", ls=style, lw=1, label=name)
    ax.set(xlabel="step (16 x 128 bytes each)", ylabel="held-out bits per byte",
           title="Shakespeare, byte level, held-out plays")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mixers", nargs="+", default=MIXERS)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--data", default="data/shakespeare")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "shakespeare")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    data = ROOT / args.data
    if not args.report_only and not (data / "meta.json").exists():
        subprocess.run([sys.executable, "-m", "linmix.prepare", "--corpus=shakespeare",
                        f"--out={data}"], cwd=ROOT, check=True)  # fmt: skip
    target = parameters("attention", get_config("size=tiny").model.d_model)
    widths = {m: matched_width(m, target) for m in args.mixers}
    for m, (d, n) in widths.items():
        print(f"{m}: d_model={d}, {n:,} parameters (target {target:,})")
    if not args.report_only:
        for m, (d, _) in widths.items():
            train(m, d, args)
    report(args.runs, widths, target, compressors(data), args.out)


if __name__ == "__main__":
    main()
