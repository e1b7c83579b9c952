"""GPU benchmark of the chunked engines: Pallas GPU kernels (Triton lowering: 'pallas_triton'; the
Mosaic GPU: 'pallas_mosaic_gpu'), Triton kernels through jax_triton ('jax_triton') vs the XLA
chunked form vs the PyTorch ecosystem's chunk kernels (flash-linear-attention, when `fla`
imports), same shapes.

    python experiments/bench/gpu.py            # on a GPU machine: tests + table
    python experiments/bench/gpu.py --smoke    # tiny shapes, any backend (CPU: interpret mode)

Setup: bf16, B * T = 32k tokens, H = 16, K = V = 128, T in {2k, 8k, 32k}; forward
and forward+backward (gradient of sum(o * ct) w.r.t. every input); median ms over --repeats
after warm-up (fla autotunes on first calls: its warm-up is untimed too). Ceilings measured in
the same run: bf16 matmul FLOP/s and device copy bytes/s. The kinds and their fla kernels:
scalar -> chunk_simple_gla, vector -> chunk_gla, delta -> chunk_delta_rule, gated_delta ->
chunk_gated_delta_rule. First, unless --no-tests, `pytest -m gpu tests/ops` runs natively.
Writes --json and a markdown table beside it (.md) with the fla / linmix time ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from linmix.ops.delta import delta_rule
from linmix.ops.gla import gla
from ops import log, machine_info, time_calls

KINDS = {
    "scalar": "chunk_simple_gla",
    "vector": "chunk_gla",
    "delta": "chunk_delta_rule",
    "gated_delta": "chunk_gated_delta_rule",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--T", type=int, nargs="+", default=[2048, 8192, 32768])
    p.add_argument("--tokens", type=int, default=32768, help="B * T")
    p.add_argument("--H", type=int, default=16)
    p.add_argument("--K", type=int, default=128)
    p.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    impls = ["xla_chunked", "pallas_triton", "pallas_mosaic_gpu", "jax_triton", "fla"]
    p.add_argument("--impls", nargs="+", default=impls)
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-tests", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, 2 repeats, no tests")
    p.add_argument("--json", type=Path, default=Path("experiments/bench/results/gpu.json"))
    args = p.parse_args(argv)
    if args.smoke:
        args.T, args.tokens, args.H, args.K = [64], 128, 2, 16
        args.repeats, args.warmup, args.no_tests = 2, 1, True
    return args


def inputs(kind: str, B: int, T: int, H: int, K: int, key) -> dict:
    """bf16 q, k, v; fp32 gates: GLA-range log-decays, delta-rule beta = sigmoid(N(0, 1))."""
    keys = jax.random.split(key, 5)
    kg, kb = keys[3], keys[4]
    x = {n: jax.random.normal(keys[i], (B, T, H, K), jnp.bfloat16) for i, n in enumerate("qkv")}
    gate_shape = (B, T, H, K) if kind == "vector" else (B, T, H)
    if kind != "delta":
        x["g"] = jax.nn.log_sigmoid(jax.random.normal(kg, gate_shape)) / 16
    if kind in ("delta", "gated_delta"):
        x["beta"] = jax.nn.sigmoid(jax.random.normal(kb, (B, T, H)))
    return x


def jax_forward(kind: str, impl: str, chunk_size: int):
    def f(x):
        if kind in ("scalar", "vector"):
            o, _ = gla(x["q"], x["k"], x["v"], x["g"], chunk_size=chunk_size, implementation=impl)
        else:
            o, _ = delta_rule(
                x["q"], x["k"], x["v"], x["beta"], x.get("g"), use_qk_l2norm=True,
                chunk_size=chunk_size, implementation=impl,
            )  # fmt: skip
        return o

    return f


def time_jax(kind: str, impl: str, x: dict, args, key) -> dict:
    f = jax_forward(kind, impl, args.chunk_size)
    ct = jax.random.normal(key, x["v"].shape, jnp.bfloat16)
    fwd = jax.jit(f)
    fwd_bwd = jax.jit(jax.grad(lambda x: jnp.sum(f(x).astype(jnp.float32) * ct)))
    out = {}
    for name, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
        res = time_calls(fn, (x,), repeats=args.repeats, warmup=args.warmup, max_seconds=600)
        out[name] = statistics.median(res["times_s"]) * 1e3 if "times_s" in res else None
    return out


def time_fla(kind: str, x: dict, args) -> dict:
    """The fla kernel on the same values (torch, bf16 on the GPU); {'error': ...} if unusable."""
    try:
        import numpy as np
        import torch
        from fla import ops as fla_ops

        fn = getattr(fla_ops, KINDS[kind])
    except Exception as e:  # fla or torch missing, or another fla version
        return {"error": f"{type(e).__name__}: {e}"}

    def t(a, grad=True):
        a = torch.from_numpy(np.asarray(a, np.float32)).cuda()
        return a.to(torch.bfloat16 if a.ndim == 4 else torch.float32).requires_grad_(grad)

    def call(v):
        q, k = (t(x[n]) for n in "qk")
        if kind in ("delta", "gated_delta"):
            q, k = (torch.nn.functional.normalize(a, dim=-1) for a in (q, k))
        if kind == "delta":
            return fn(q, k, v, t(x["beta"]))[0]
        if kind == "gated_delta":
            return fn(q, k, v, t(x["g"]), t(x["beta"]))[0]
        return fn(q, k, v, t(x["g"]))[0]

    out = {}
    try:
        v = t(x["v"])
        for name, backward in (("fwd", False), ("fwd_bwd", True)):
            times = []
            for i in range(args.warmup + args.repeats):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                o = call(v)
                if backward:
                    o.float().sum().backward()
                torch.cuda.synchronize()
                if i >= args.warmup:
                    times.append(time.perf_counter() - t0)
            out[name] = statistics.median(times) * 1e3
    except Exception as e:  # e.g. fla refusing a backward on this GPU / Triton version
        out["error"] = f"{type(e).__name__}: {str(e)[:200]}"
    return out


def ceilings(args) -> dict:
    """bf16 matmul FLOP/s and device copy bytes/s, measured now (tiny under --smoke)."""
    n = 256 if args.smoke else 8192
    a = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
    res = time_calls(jax.jit(jnp.matmul), (a, a), repeats=args.repeats, warmup=2, max_seconds=600)
    matmul_s = statistics.median(res["times_s"])
    big = jax.random.normal(jax.random.key(2), (n * 64, n // 2), jnp.float32)
    res = time_calls(jax.jit(lambda y: y * 2.0), (big,), repeats=args.repeats, warmup=2,
                     max_seconds=600)  # fmt: skip
    copy_s = statistics.median(res["times_s"])
    return {
        "matmul_bf16_flops_per_s": 2 * n**3 / matmul_s,
        "copy_bytes_per_s": 2 * big.nbytes / copy_s,
    }


def run_tests() -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "tests/ops"],
        capture_output=True, text=True,
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    return lines[-1] if lines else proc.stderr[-500:]


def _ratio(fla: dict, r: dict, pass_: str) -> str:
    a, b = fla.get(pass_), r.get(pass_)
    return f"{a / b:.2f}x" if a and b and r["impl"] != "fla" else "—"


def _ms(r: dict, pass_: str) -> str:
    return f"{r[pass_]:.3f}" if r.get(pass_) else r.get("error", "—")[:40]


def markdown(result: dict) -> str:
    lines = [
        f"GPU benchmark, {result['machine']['device']}, jax {result['machine']['jax']}; "
        f"`pytest -m gpu`: {result.get('tests', 'not run')}",
        "",
        "| kind | T | B | impl | fwd ms | fwd+bwd ms | fla / impl fwd | fla / impl fwd+bwd |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        fla = next(
            (x for x in result["rows"] if x["impl"] == "fla" and x["kind"] == r["kind"]
             and x["T"] == r["T"]), {},
        )  # fmt: skip
        lines.append(
            f"| {r['kind']} | {r['T']} | {r['B']} | {r['impl']} | {_ms(r, 'fwd')} | "
            f"{_ms(r, 'fwd_bwd')} | {_ratio(fla, r, 'fwd')} | {_ratio(fla, r, 'fwd_bwd')} |"
        )
    c = result["ceilings"]
    lines += [
        "",
        f"Ceilings in the same run: bf16 matmul {c['matmul_bf16_flops_per_s'] / 1e12:.0f} "
        f"TFLOP/s, copy {c['copy_bytes_per_s'] / 1e12:.2f} TB/s.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    result = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}}
    if not args.no_tests:
        result["tests"] = run_tests()
        log(f"pytest -m gpu: {result['tests']}")
    result["ceilings"] = ceilings(args)
    rows = []
    key = jax.random.key(0)
    for T in args.T:
        B = max(1, args.tokens // T)
        for kind in args.kinds:
            key, in_key, ct_key = jax.random.split(key, 3)
            x = inputs(kind, B, T, args.H, args.K, in_key)
            for impl in args.impls:
                row = {"kind": kind, "T": T, "B": B, "impl": impl}
                try:
                    row |= (
                        time_fla(kind, x, args)
                        if impl == "fla"
                        else time_jax(kind, impl, x, args, ct_key)
                    )
                except Exception as e:  # a failing case is recorded, never fatal
                    row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                log(json.dumps(row))
                rows.append(row)
    result["rows"] = rows
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    args.json.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
