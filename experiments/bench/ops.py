"""CPU benchmark of every engine's forms (per-token scan, associative scan, chunked) and of
softmax attention, forward and forward+backward.

    python experiments/bench/ops.py --gate none scalar vector delta gated_delta selective
    python experiments/bench/ops.py --T 256 512 --repeats 2 --json /tmp/ops.json     # smoke

`--gate` picks gate kinds (`engines.py`: engine L none/scalar/vector, engine Δ delta/gated_delta,
the selective scan 'selective'). Cases run T by T (smallest first), so the headline sizes finish
before the largest. Each case gets fresh random inputs (`engines.py` says which), is compiled,
warmed up, then timed `--repeats` times with block_until_ready; the median is reported. fwd+bwd
is the gradient of sum(o * ct) w.r.t. every input of the op for a fixed random cotangent ct.
Peak memory is temp + argument + output bytes of the compiled executable's memory_analysis().
FLOP counts come from `flops.py` (conventions there) and are reported as a fraction of the
FLOP/s of a dense fp32 matmul measured in the same run (the better of a start and an end run).

A case is skipped (reason in its JSON row and in the table), never fatal, when: softmax
attention's T x T scores would need more than --max-gib; the compiled executable would need more
than --max-gib; an estimate (previous T scaled by T, or T^2 for attention; or the first warm-up
call) says warm-up + repeats would exceed --max-seconds; or the op raises (e.g. the associative
scan refuses a per-token state that is too big).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import engines
import flops
import jax
import jax.numpy as jnp
import jaxlib

PASSES = flops.PASSES
GIB = 1 << 30
MIB = 1 << 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--T", type=int, nargs="+", default=[1024, 4096, 8192, 16384, 65536])
    p.add_argument("--B", type=int, default=1)
    p.add_argument("--H", type=int, default=4)
    p.add_argument("--K", type=int, default=64)
    p.add_argument("--V", type=int, default=64)
    p.add_argument("--gate", nargs="+", choices=list(engines.KINDS), default=["scalar"])
    p.add_argument("--forms", nargs="+", choices=engines.ALL_FORMS, default=engines.ALL_FORMS)
    p.add_argument("--ssm-state", type=int, default=16, help="state size N of 'selective'")
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2, help="untimed calls (at least 1)")
    p.add_argument("--max-gib", type=float, default=8.0, help="skip cases needing more memory")
    p.add_argument("--max-seconds", type=float, default=300.0, help="per-case call budget")
    p.add_argument("--matmul-n", type=int, default=2048, help="size of the reference matmul")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=Path("experiments/bench/results/ops_cpu.json"))
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine_info() -> dict:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "git_commit": commit,
    }


def time_calls(fn, inputs: tuple, *, repeats: int, warmup: int, max_seconds: float) -> dict:
    """Warm up, then time `repeats` calls. Returns {'times_s': [...]} or {'skipped': why}."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*inputs))
    first_s = time.perf_counter() - t0
    if first_s * (warmup - 1 + repeats) > max_seconds:
        return {
            "skipped": f"first call took {first_s:.3g} s: {warmup - 1 + repeats} more calls "
            f"would exceed --max-seconds {max_seconds:g}",
            "first_call_s": first_s,
        }
    for _ in range(warmup - 1):
        jax.block_until_ready(fn(*inputs))
    times_s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*inputs))
        times_s.append(time.perf_counter() - t0)
    return {"times_s": times_s}


def measure_matmul(n: int, args: argparse.Namespace, key: jax.Array) -> dict:
    a_key, b_key = jax.random.split(key)
    a_NN = jax.random.normal(a_key, (n, n), jnp.float32)
    b_NN = jax.random.normal(b_key, (n, n), jnp.float32)
    compiled = jax.jit(jnp.matmul).lower(a_NN, b_NN).compile()
    res = time_calls(
        compiled, (a_NN, b_NN), repeats=args.repeats, warmup=args.warmup, max_seconds=1e9
    )
    median_s = statistics.median(res["times_s"])
    flops_per_s = flops.matmul(n, n, n) / median_s
    log(f"matmul {n}x{n} fp32: {median_s * 1e3:.2f} ms, {flops_per_s / 1e9:.1f} GFLOP/s")
    return {"n": n, "ms": median_s * 1e3, "flops_per_s": flops_per_s}


def make_case(row: dict, args: argparse.Namespace, key: jax.Array):
    """(jittable fn, inputs) of one case: fwd(*x) -> o, or fwd+bwd(ct, *x) -> grads of every x."""
    shape = engines.Shape(args.B, args.H, args.K, args.V, args.ssm_state)
    in_key, ct_key = jax.random.split(key)
    if row["form"] == "attention":
        diff = engines.attention_inputs(in_key, row["T"], shape)
        forward = engines.attention_forward(row["form"], args.chunk_size)
    else:
        kind = engines.KINDS[row["gate"]]
        diff = kind.inputs(in_key, row["T"], shape)
        forward = kind.forward(row["form"], args.chunk_size)
    if row["pass"] == "fwd":
        return forward, diff
    out = jax.eval_shape(forward, *diff)
    ct = jax.random.normal(ct_key, out.shape, out.dtype)

    def forward_backward(ct, *diff):
        loss = lambda *d: jnp.sum(forward(*d) * ct)
        return jax.grad(loss, argnums=tuple(range(len(diff))))(*diff)

    return forward_backward, (ct, *diff)


def memory_bytes(compiled) -> dict:
    try:
        mem = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        mem = None
    if mem is None:
        return {"peak_mib": None}
    parts = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes")
    total = sum(getattr(mem, p, 0) or 0 for p in parts)
    out = {"peak_mib": total / MIB}
    out.update({p.removesuffix("_size_in_bytes") + "_mib": getattr(mem, p, 0) / MIB for p in parts})
    return out


def estimate_seconds(row: dict, done: dict) -> tuple[float, str] | None:
    """Seconds per call predicted from finished cases of the same gate/form, or None."""
    T, p = row["T"], (2 if row["form"] == "attention" else 1)
    prev = [(t, s) for (g, f, ps, t), s in done.items() if (g, f, ps) == _kind(row) and t < T]
    if prev:
        t_prev, s_prev = max(prev)
        return s_prev * (T / t_prev) ** p, f"T={t_prev} scaled by (T/{t_prev})^{p}"
    fwd_s = done.get((row["gate"], row["form"], "fwd", T))
    if row["pass"] == "fwd+bwd" and fwd_s is not None:
        return 3 * fwd_s, "3x this T's forward"
    return None


def _kind(row: dict) -> tuple[str, str, str]:
    return row["gate"], row["form"], row["pass"]


def precheck(row: dict, args: argparse.Namespace, done: dict, too_slow: dict) -> str | None:
    """A reason to skip before building anything, or None."""
    for kind in (_kind(row), (row["gate"], row["form"], "fwd")):  # fwd+bwd costs more than fwd
        if kind in too_slow:
            return f"{kind[2]} too slow at T={too_slow[kind]} (--max-seconds {args.max_seconds:g})"
    if row["form"] == "attention":
        # dot_product_attention on CPU materialises fp32 [B,H,T,T] logits and probabilities
        # (fwd); the backward adds their two gradients. Plus the bool [T, T] mask.
        copies = 2 if row["pass"] == "fwd" else 4
        need = copies * args.B * args.H * row["T"] ** 2 * 4 + row["T"] ** 2
        if need > args.max_gib * GIB:
            return f"T^2 scores would need {need / GIB:.3g} GiB > --max-gib {args.max_gib:g}"
    est = estimate_seconds(row, done)
    calls = args.warmup + args.repeats
    if est is not None and est[0] * calls > args.max_seconds:
        return (
            f"estimated {est[0]:.1f} s/call ({est[1]}): {calls} calls > --max-seconds "
            f"{args.max_seconds:g}"
        )
    return None


def run_case(row: dict, args: argparse.Namespace, key: jax.Array) -> dict:
    """Fills row with timings and memory, or with 'skipped'. Never raises (except Ctrl-C)."""
    try:
        fn, inputs = make_case(row, args, key)
        t0 = time.perf_counter()
        try:
            compiled = jax.jit(fn).lower(*inputs).compile()
        except ValueError as e:  # e.g. associative_scan refusing a too-big per-token state
            return {**row, "skipped": f"ValueError: {e}"}
        row["compile_s"] = time.perf_counter() - t0
        row.update(memory_bytes(compiled))
        if row["peak_mib"] is not None and row["peak_mib"] * MIB > args.max_gib * GIB:
            return {
                **row,
                "skipped": f"compiled needs {row['peak_mib'] / 1024:.3g} GiB "
                f"> --max-gib {args.max_gib:g}",
            }
        res = time_calls(
            compiled,
            inputs,
            repeats=args.repeats,
            warmup=args.warmup,
            max_seconds=args.max_seconds,
        )
    except Exception as e:
        return {**row, "skipped": f"error: {type(e).__name__}: {str(e)[:300]}"}
    if "skipped" in res:
        return {**row, **res, "too_slow": True}
    median_s = statistics.median(res["times_s"])
    row.update(
        ms=median_s * 1e3,
        times_ms=[t * 1e3 for t in res["times_s"]],
        tokens_per_s=args.B * row["T"] / median_s,
        flops_per_s=row["flops"] / median_s,
    )
    return row


def ratio(rows: list[dict], num: tuple, den: tuple) -> tuple[float | None, str]:
    """rows are looked up by (gate, form, pass, T); returns (ratio or None, what was missing)."""
    by_key = {(r["gate"], r["form"], r["pass"], r["T"]): r for r in rows}
    missing = [k for k in (num, den) if by_key.get(k, {}).get("ms") is None]
    if missing:
        return None, "missing " + ", ".join(f"{k[1]} {k[2]} T={k[3]}" for k in missing)
    return by_key[num]["ms"] / by_key[den]["ms"], ""


def summary(rows: list[dict], gates: list[str]) -> list[dict]:
    """The headline ratios of this run, one set per gate kind."""
    out = []
    for g in gates:
        c = engines.KINDS[g].chunked
        checks = [
            ("(a) reference fwd+bwd / chunked fwd+bwd, T=4096", ">= 20x", lambda r: r >= 20,
             (g, "reference", "fwd+bwd", 4096), (g, c, "fwd+bwd", 4096)),
            ("(b) chunked fwd+bwd T=16384 / T=4096", "<= 4.5x", lambda r: r <= 4.5,
             (g, c, "fwd+bwd", 16384), (g, c, "fwd+bwd", 4096)),
            ("(c) softmax attention fwd+bwd / chunked fwd+bwd, T=8192", "> 1x", lambda r: r > 1,
             ("-", "attention", "fwd+bwd", 8192), (g, c, "fwd+bwd", 8192)),
        ]  # fmt: skip
        for name, target, ok, num, den in checks:
            value, missing = ratio(rows, num, den)
            out.append({
                "gate": g, "ratio": name, "value": value, "target": target,
                "met": None if value is None else bool(ok(value)), "note": missing,
            })  # fmt: skip
    return out


def markdown(result: dict) -> str:
    ceiling = result["matmul_flops_per_s"]
    lines = [
        f"# ops on CPU ({result['machine']['date']}, jax {result['machine']['jax']}, "
        f"{result['machine']['cpus_usable']} CPUs)",
        "",
        f"B={result['shapes']['B']} H={result['shapes']['H']} K={result['shapes']['K']} "
        f"V={result['shapes']['V']} chunk={result['shapes']['chunk_size']} (selective scan: "
        f"H*V channels, N={result['shapes']['ssm_state']}), fp32, median of "
        f"{result['config']['repeats']}; matmul ceiling {ceiling / 1e9:.1f} GFLOP/s "
        f"({result['config']['matmul_n']}^2 fp32)",
        "",
        "| gate | form | pass | T | ms | tokens/s | peak MiB | FLOP/s frac of matmul | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        if "ms" in r:
            peak = "n/a" if r.get("peak_mib") is None else f"{r['peak_mib']:.0f}"
            cells = [f"{r['ms']:.2f}", f"{r['tokens_per_s']:.3g}", peak,
                     f"{r['flops_per_s'] / ceiling:.3f}", ""]  # fmt: skip
        else:
            cells = ["—", "—", "—", "—", "skipped: " + r["skipped"].replace("|", "/")]
        lines.append(
            "| " + " | ".join([r["gate"], r["form"], r["pass"], str(r["T"]), *cells]) + " |"
        )
    lines += ["", "## Headline ratios (this run)", ""]
    lines += ["| gate | ratio | value | target | met |", "|---|---|---:|---|---|"]
    for s in result["summary"]:
        value = f"{s['value']:.2f}x" if s["value"] is not None else f"n/a ({s['note']})"
        met = {True: "yes", False: "NO", None: "—"}[s["met"]]
        lines.append(f"| {s['gate']} | {s['ratio']} | {value} | {s['target']} | {met} |")
    return "\n".join(lines) + "\n"


def cases(args: argparse.Namespace):
    """Benchmark rows in run order: T ascending (the headline sizes finish before the largest),
    then gate kind, form, pass. Attention has no gate: it runs once per T, with gate '-'."""
    shape = engines.Shape(args.B, args.H, args.K, args.V, args.ssm_state)
    for T in sorted(args.T):
        runs = [(g, f) for g in args.gate for f in engines.KINDS[g].forms if f in args.forms]
        if "attention" in args.forms:
            runs.append(("-", "attention"))
        for gate, form in runs:
            if form == "attention":
                engine, fwd = "attention", flops.attention(args.B, T, args.H, args.K, args.V)
            else:
                kind = engines.KINDS[gate]
                engine, fwd = kind.engine, kind.fwd_flops(form, T, shape, args.chunk_size)
            for pass_ in PASSES:
                yield {
                    "engine": engine,
                    "gate": gate,
                    "form": form,
                    "pass": pass_,
                    **dataclasses.asdict(shape),
                    "T": T,
                    "chunk_size": args.chunk_size,
                    "flops": flops.with_backward(fwd, pass_),
                }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    matmul_key, case_key = jax.random.split(jax.random.key(args.seed))
    result = {
        "machine": machine_info(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "shapes": {
            "B": args.B,
            "H": args.H,
            "K": args.K,
            "V": args.V,
            "ssm_state": args.ssm_state,
            "chunk_size": args.chunk_size,
            "dtype": "float32",
        },
        "flop_conventions": flops.__doc__,
    }
    matmuls = [measure_matmul(args.matmul_n, args, jax.random.fold_in(matmul_key, 0))]

    def write(rows: list[dict]) -> None:
        result.update(
            matmul=matmuls,
            matmul_flops_per_s=max(m["flops_per_s"] for m in matmuls),
            rows=rows,
            summary=summary(rows, args.gate),
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        args.json.with_suffix(".md").write_text(markdown(result))

    rows: list[dict] = []
    done: dict = {}  # (gate, form, pass, T) -> median seconds
    too_slow: dict = {}  # (gate, form, pass) -> T where it was skipped for time
    for row in cases(args):
        log(f"[{len(rows) + 1}] {row['gate']} {row['form']} {row['pass']} T={row['T']} ...")
        reason = precheck(row, args, done, too_slow)
        if reason is None:
            row = run_case(row, args, jax.random.fold_in(case_key, len(rows)))
        else:
            row["skipped"] = reason
        if "ms" in row:
            done[(*_kind(row), row["T"])] = row["ms"] / 1e3
            peak = "n/a" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
            log(
                f"    {row['ms']:.2f} ms, {row['flops_per_s'] / 1e9:.2f} GFLOP/s, "
                f"peak {peak} MiB, compile {row['compile_s']:.1f} s"
            )
        else:
            if row.pop("too_slow", False) or (reason or "").startswith("estimated"):
                too_slow.setdefault(_kind(row), row["T"])
            log(f"    skipped: {row['skipped']}")
        rows.append(row)
        write(rows)
    matmuls.append(measure_matmul(args.matmul_n, args, jax.random.fold_in(matmul_key, 1)))
    write(rows)
    print(markdown(result), flush=True)
    log(f"wrote {args.json} and {args.json.with_suffix('.md')}")


if __name__ == "__main__":
    main()
