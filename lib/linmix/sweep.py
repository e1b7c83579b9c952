"""Sweeps for scaled ablations: a grid of `python -m linmix.main` runs, run, resumed and reported.

    python -m linmix.sweep --config=ml_collections_configs/ablations/mqar.py:preset=cpu \
        --out=runs/sweeps/mqar_cpu                         # run every run here, then report
    python -m linmix.sweep --config=... --out=DIR --only=gla_ --dry_run   # the commands only
    python -m linmix.sweep --config=... --out=DIR --mode=slurm   # DIR/jobs/*.sbatch, submit_all.sh
    python -m linmix.sweep --config=... --out=DIR --mode=tpu     # TPU pod scripts, submit_all.sh
    python -m linmix.sweep --out=DIR --mode=report               # tables and plots from DIR

The ablation config (`ml_collections_configs/ablations/mqar.py` documents its fields) expands
into mixers x widths x lrs x seeds x tasks runs, each named like `gla_d64_lr1e-03_s0_T64_kv4`
with workdir `<out>/<name>`. Every run's config is built and validated first (`linmix.get_config`):
a bad grid exits with code 2 and one line naming the run before anything starts.

Local mode runs them one after another as subprocesses (their output goes to
`<out>/<name>/sweep_stdout.log` and `sweep_stderr.log`). A finished run (a `done` marker written
after exit 0, or metrics.jsonl reaching train.steps) is skipped; an interrupted one resumes from
its newest checkpoint. A failing run leaves its exit code and stderr tail in
`<out>/<name>/sweep_error.txt`; the sweep goes on and exits 1 at the end. Report mode (also run
after local mode) writes `<out>/results.json`, the table `<out>/results.md` (rows mixers, columns
task x width, cells the best final metric over learning rates, mean over seeds, with that lr) and
`<out>/accuracy_vs_width.png`.

From Python: `runs = expand(load_ablation(spec))`, `run_local(runs, out)`, `report(out)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import itertools
import json
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any

from linmix.api import config_file_module, get_config

MANIFEST = "sweep.json"
DONE = "done"
ERROR = "sweep_error.txt"
TABLE = Path("results").with_suffix(".md").name
PLOT = "accuracy_vs_width.png"
TASK_FILES = {name: f"ml_collections_configs/{name}.py" for name in ("mqar", "lm", "mad")}


class SweepError(ValueError):
    """A grid that cannot run (one line, naming the run)."""


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    mixer: str
    width: int
    lr: float
    seed: int
    task: str
    base: str  # the ablation's config spec, without the mixer
    overrides: dict[str, Any]  # dotted key -> value, in the order they apply
    steps: int = 0  # train.steps of the validated config

    @property
    def spec(self) -> str:
        """The run's `linmix.get_config` spec: the base with the mixer as a variant."""
        return f"{self.base}{',' if ':' in self.base else ':'}mixer={self.mixer}"

    def command(self, workdir: str | Path, python: str = sys.executable) -> list[str]:
        """`python -m linmix.main ...` for this run, flags formatted as absl parses them."""
        source, _, variant = self.spec.partition(":")
        source = cli_config_file(source)
        flags = [f"--config.{key}={flag_value(value)}" for key, value in self.overrides.items()]
        return [python, "-m", "linmix.main", f"--config={source}:{variant}", *flags,
                f"--workdir={workdir}"]  # fmt: skip


def load_ablation(spec: str):
    """The ablation ConfigDict of `FILE.py[:variant]` (its `get_config(variant)`)."""
    source, _, variant = spec.partition(":")
    try:
        module = config_file_module(source)
    except FileNotFoundError:
        raise SweepError(f"ablation config {source} not found") from None
    return module.get_config(variant or None)


def cli_config_file(source: str) -> str:
    """A config file `python -m linmix.main --config=` loads for a spec's source part."""
    if source.endswith(".py"):
        return source
    if source in TASK_FILES and Path(TASK_FILES[source]).is_file():
        return TASK_FILES[source]  # the repository's config file, when run from its root
    return importlib.import_module(f"linmix.configs.{source}").__file__


def flag_value(value: Any) -> str:
    """A value as `--config.KEY=VALUE` text: True/False, floats by repr, tuples for sequences."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(flag_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return str(value)


def lr_tag(lr: float) -> str:
    """The shortest exact scientific form: 1e-03, 4.64e-04."""
    for digits in range(8):
        if float(text := f"{lr:.{digits}e}") == lr:
            return text
    return f"{lr:.8e}"


def flatten(overrides: Any) -> dict[str, Any]:
    """Dotted-key overrides from a dict or a ConfigDict (`allow_dotted_keys=True`)."""
    return dict(overrides.to_dict() if hasattr(overrides, "to_dict") else overrides or {})


def expand(ablation, *, validate: bool = True) -> list[Run]:
    """The grid's runs (mixer-major order). With `validate`, every run's config is built with
    `linmix.get_config` (SweepError names the first bad run) and its train.steps recorded."""
    grid, runs = ablation.grid, []
    axes = (grid.mixers, grid.tasks, grid.widths, grid.lrs, grid.seeds)
    for mixer, task, width, lr, seed in itertools.product(*axes):
        name = f"{mixer}_d{width}_lr{lr_tag(lr)}_s{seed}_{task['name']}"
        overrides = {**flatten(ablation.get("overrides")), **flatten(task.get("overrides")),
                     "model.d_model": width, "train.lr": float(lr), "seed": seed}  # fmt: skip
        base = task.get("base", ablation.base)  # a task may name its own config spec
        runs.append(Run(name, mixer, width, float(lr), seed, task["name"], base, overrides))
    if ablation.mode not in ("max", "min"):
        raise SweepError(f"mode must be 'max' or 'min', got {ablation.mode!r}")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise SweepError(f"duplicate run names in the grid: {twice}")
    return [checked(r) for r in runs] if validate else runs


def checked(run: Run) -> Run:
    try:
        config = get_config(run.spec, run.overrides)
    except Exception as e:  # any config error: one line naming the run
        text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        text = " ".join(text.split())
        raise SweepError(f"run {run.name}: {type(e).__name__}: {text}") from e
    return dataclasses.replace(run, steps=int(config.train.steps))


def read_records(workdir: Path) -> list[dict]:
    """metrics.jsonl's records (a line cut off mid-write is ignored)."""
    path = workdir / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def finished(run: Run, workdir: Path) -> bool:
    """A `done` marker for this many steps, or metrics that reach train.steps."""
    try:
        if json.loads((workdir / DONE).read_text()).get("steps") == run.steps:
            return True
    except (OSError, ValueError, AttributeError):
        pass
    records = read_records(workdir)
    return bool(records) and records[-1].get("step", -1) >= run.steps


def final_metric(workdir: Path, metric: str) -> float | None:
    values = [r[metric] for r in read_records(workdir) if metric in r]
    return values[-1] if values else None


def run_local(runs: list[Run], out: str | Path, *, metric: str = "eval_accuracy",
              python: str = sys.executable, log=print) -> dict[str, str]:  # fmt: skip
    """Run every unfinished run in sequence: {name: "done" | "skipped" | "failed"}."""
    out = Path(out)
    status = {}
    todo = [r for r in runs if not finished(r, out / r.name)]
    log(f"linmix.sweep: {len(runs)} runs, {len(runs) - len(todo)} finished earlier (skipped), "
        f"{len(todo)} to run in {out}", flush=True)  # fmt: skip
    for i, run in enumerate(runs, 1):
        head, workdir = f"[{i}/{len(runs)}] {run.name}", out / run.name
        if run not in todo:
            status[run.name] = "skipped"
            log(f"{head} skipped (finished earlier)", flush=True)
            continue
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / ERROR).unlink(missing_ok=True)
        command = run.command(workdir, python)
        logs = {k: workdir / f"sweep_{k}.log" for k in ("stdout", "stderr")}
        offsets = {k: p.stat().st_size if p.exists() else 0 for k, p in logs.items()}
        log(f"{head} running", flush=True)
        start = time.time()
        with logs["stdout"].open("a") as o, logs["stderr"].open("a") as e:
            o.write(f"# linmix.sweep {time.strftime('%F %T')}: {shlex.join(command)}\n")
            o.flush()
            proc = subprocess.Popen(command, stdout=o, stderr=e)
            try:
                code = proc.wait()
            except KeyboardInterrupt:  # the run got the signal too: let it save a checkpoint
                proc.wait()
                raise
        seconds = time.time() - start
        stdout, stderr = (logs[k].read_bytes()[offsets[k] :].decode(errors="replace") for k in logs)
        resumed = [ln for ln in stdout.splitlines() if "resuming from checkpoint" in ln]
        note = f" ({resumed[-1].removeprefix('linmix: ')})" if resumed else ""
        if code == 0:
            value = final_metric(workdir, metric)
            marker = {"steps": run.steps, metric: value, "seconds": round(seconds, 1)}
            (workdir / DONE).write_text(json.dumps(marker) + "\n")
            status[run.name] = "done"
            shown = "n/a" if value is None else f"{value:.4f}"
            log(f"{head} done in {seconds:.0f}s{note}, {metric}={shown}", flush=True)
        else:
            tail = "\n".join(stderr.splitlines()[-40:])
            (workdir / ERROR).write_text(f"exit code {code}\ncommand: {shlex.join(command)}\n"
                                         f"stderr (last lines):\n{tail}\n")  # fmt: skip
            status[run.name] = "failed"
            log(f"{head} FAILED (exit {code}) after {seconds:.0f}s{note}: see {workdir / ERROR}",
                flush=True)  # fmt: skip
    counts = {s: list(status.values()).count(s) for s in ("done", "skipped", "failed")}
    log(f"linmix.sweep: {counts['done']} ran, {counts['skipped']} skipped, "
        f"{counts['failed']} failed", flush=True)  # fmt: skip
    return status


def write_manifest(ablation, runs: list[Run], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"metric": ablation.metric, "mode": ablation.mode,
                "select": ablation.get("select", "best over lrs"),
                "runs": [dataclasses.asdict(r) for r in runs]}  # fmt: skip
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def write_jobs(runs: list[Run], out: Path, kind: str) -> list[Path]:
    """One job script per run under `<out>/jobs/` and `submit_all.sh`; nothing is run."""
    jobs, root = out / "jobs", Path.cwd()
    jobs.mkdir(parents=True, exist_ok=True)
    scripts = []
    for run in runs:
        if kind == "slurm":
            workdir = out / run.name
            command = shlex.join(run.command(workdir, "python"))
            text = SLURM.format(name=run.name, log=jobs.absolute(), root=root,
                                command=command, workdir=workdir, steps=run.steps)  # fmt: skip
            path = jobs / f"{run.name}.sbatch"
        else:
            flags = run.command(f"$SWEEP_DIR/{run.name}", "python3")[1:]
            flags.insert(3, "--config.distributed.enabled=True")
            command = " ".join(f'"{f}"' if f.startswith("--workdir") else shlex.quote(f)
                               for f in flags).replace('"', '\\"')  # fmt: skip
            text = TPU.format(name=run.name, command=command, steps=run.steps)
            path = jobs / f"{run.name}.sh"
        path.write_text(text)
        path.chmod(0o755)
        scripts.append(path)
    lines = ["#!/bin/bash", "set -euo pipefail", f"cd {shlex.quote(str(root))}"]  # from the root
    if kind == "slurm":
        lines.insert(1, f"# Submits every unfinished run of the sweep in {out} (one GPU each).")
        for run, path in zip(runs, scripts, strict=True):
            done = shlex.quote(str(out / run.name / DONE))
            lines.append(f"[ -f {done} ] || sbatch {shlex.quote(str(path))}")
    else:
        lines += [*TPU_SUBMIT.splitlines(), *(shlex.quote(str(p)) for p in scripts)]
    (jobs / "submit_all.sh").write_text("\n".join(lines) + "\n")
    (jobs / "submit_all.sh").chmod(0o755)
    return scripts


TPU_SUBMIT = """# The runs one after another on a TPU pod slice (each host gets this checkout).
# SWEEP_DIR: a directory all hosts see (finished runs return at once).
#   TPU=my-v5e-32 ZONE=us-west4-a SWEEP_DIR=/mnt/shared/sweep bash <out>/jobs/submit_all.sh
: "${TPU:?}" "${ZONE:?}" "${SWEEP_DIR:?}"
gcloud compute tpus tpu-vm scp --recurse --zone="$ZONE" --worker=all . "$TPU":linmix
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all \\
  --command="cd linmix && python3 -m pip install -q -e '.[tpu]'"
"""

SLURM = """#!/bin/bash
# linmix.sweep run {name} (submit_all.sh submits every unfinished run).
#SBATCH --job-name={name}
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output={log}/{name}-%j.out
set -euo pipefail
cd {root}
# Preemption or a rerun resumes from the newest checkpoint; a finished run returns at once.
{command}
echo '{{"steps": {steps}}}' > {workdir}/done
"""

TPU = """#!/bin/bash
# linmix.sweep run {name} on every host of a TPU pod slice (submit_all.sh runs them all).
set -euo pipefail
: "${{TPU:?}}" "${{ZONE:?}}" "${{SWEEP_DIR:?a directory every host sees}}"
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="
  set -e
  cd linmix
  python3 {command}
"
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=0 \\
  --command="echo '{{\\"steps\\": {steps}}}' > $SWEEP_DIR/{name}/done"
"""


def report(out: str | Path, *, log=print) -> dict:
    """`<out>/results.json`, the table and the plot from the runs the manifest lists."""
    out = Path(out)
    if not (out / MANIFEST).is_file():
        raise SweepError(f"{out / MANIFEST} not found: run the sweep (any mode) first")
    manifest = json.loads((out / MANIFEST).read_text())
    metric, mode = manifest["metric"], manifest["mode"]
    best_of = max if mode == "max" else min
    runs = [Run(**r) for r in manifest["runs"]]
    rows, values = [], defaultdict(lambda: defaultdict(list))  # (mixer, task, width) -> lr -> [v]
    for run in runs:
        workdir = out / run.name
        done = finished(run, workdir)
        value = final_metric(workdir, metric) if done else None
        state = "finished" if done else "failed" if (workdir / ERROR).exists() else "unfinished"
        rows.append({**dataclasses.asdict(run), "status": state, metric: value})
        if value is not None:
            values[(run.mixer, run.task, run.width)][run.lr].append(value)
    cells = []
    for (mixer, task, width), per_lr in values.items():
        means = {lr: mean(v) for lr, v in per_lr.items()}
        lr = best_of(means, key=means.get)
        cells.append({"mixer": mixer, "task": task, "width": width, "best_lr": lr,
                      metric: means[lr], "seeds": len(per_lr[lr]),
                      "by_lr": {lr_tag(k): v for k, v in sorted(means.items())}})  # fmt: skip
    results = {"metric": metric, "mode": mode, "select": manifest["select"], "cells": cells,
               "runs": rows}  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    mixers = list(dict.fromkeys(r.mixer for r in runs))
    columns = list(dict.fromkeys((r.task, r.width) for r in runs))
    lookup = {(c["mixer"], c["task"], c["width"]): c for c in cells}
    lines = [f"{metric}: best final value over learning rates ({mode}; mean over seeds), "
             "with that learning rate", "",
             "| mixer | " + " | ".join(f"{t} d{w}" for t, w in columns) + " |",
             "|---|" + "---:|" * len(columns)]  # fmt: skip
    for mixer in mixers:
        shown = [lookup.get((mixer, *c)) for c in columns]
        lines.append(f"| {mixer} | " + " | ".join(
            "-" if c is None else f"{c[metric]:.3f} (lr {lr_tag(c['best_lr'])})" for c in shown
        ) + " |")  # fmt: skip
    counts = {s: sum(r["status"] == s for r in rows) for s in ("finished", "unfinished", "failed")}
    lines += ["", ", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(rows)} runs."]
    (out / TABLE).write_text("\n".join(lines) + "\n")
    log("\n".join(lines), flush=True)
    plot(results, out / PLOT, log=log)
    return results


def plot(results: dict, path: Path, *, log=print) -> None:
    """One panel per task: the best metric over lrs against width, a line per mixer."""
    try:
        import matplotlib
    except ImportError:
        log("linmix.sweep: matplotlib is not installed: no plot (pip install -e '.[plot]')")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, cells = results["metric"], results["cells"]
    tasks = list(dict.fromkeys(r["task"] for r in results["runs"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for mixer in dict.fromkeys(c["mixer"] for c in cells):
            points = sorted((c["width"], c[metric]) for c in cells
                            if c["task"] == task and c["mixer"] == mixer)  # fmt: skip
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", ms=4, label=mixer)
        ax.set(title=task, xlabel="width (d_model)", ylabel=metric, xscale="log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log(f"wrote {path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m linmix.sweep", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="ablation config FILE.py[:variant]")
    p.add_argument("--out", required=True, type=Path, help="sweep directory: one workdir per run")
    p.add_argument("--mode", default="local", choices=("local", "slurm", "tpu", "report"))
    p.add_argument("--only", default="", help="only the runs whose name contains this")
    p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    if not args.config and args.mode != "report":
        p.error("--config is required (except with --mode=report)")
    try:
        if not args.config:
            return 0 if report(args.out) else 1
        ablation = load_ablation(args.config)
        runs = expand(ablation)
    except Exception as e:  # a bad grid or ablation config: one line, exit 2
        print(f"linmix.sweep: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    selected = [r for r in runs if args.only in r.name]
    if args.dry_run:
        for run in selected:
            print(shlex.join(run.command(args.out / run.name)))
        return 0
    write_manifest(ablation, runs, args.out)
    if args.mode in ("slurm", "tpu"):
        scripts = write_jobs(selected, args.out, args.mode)
        print(f"linmix.sweep: wrote {len(scripts)} job scripts and "
              f"{args.out / 'jobs' / 'submit_all.sh'}")  # fmt: skip
        return 0
    status = {} if args.mode == "report" else run_local(selected, args.out, metric=ablation.metric)
    report(args.out)
    return 1 if "failed" in status.values() else 0


if __name__ == "__main__":
    sys.exit(main())
