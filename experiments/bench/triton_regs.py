"""Registers and spills of the Triton kernels on an H100 (sm_90), measured without a GPU: each
kernel is compiled by Triton for sm_90 and its PTX run through ptxas -v
(`linmix.ops.kernels.jax_triton.compile`), over launch configurations (chunk C, value block BV,
num_warps, num_stages) at the GPU benchmark's K = V = 128, bf16.

    python experiments/bench/triton_regs.py            # table + results/triton_regs.{json,md}

A kernel that needs more than 255 registers per thread spills to local memory (stack) inside
its chunk loop. `jax_triton.op.JAX_TRITON_LAUNCH` (with chunks up to `MAX_CHUNK` and value blocks of
`MAX_BLOCK_V`) is the configuration that keeps every product on wgmma with the fewest spills
here; none of this is a timing.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from pathlib import Path

import triton

from linmix.ops.kernels.jax_triton import compile as triton_compile
from linmix.ops.kernels.jax_triton import op as gla_triton
from ops import machine_info


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--K", type=int, default=128)
    p.add_argument("--V", type=int, default=128)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--chunks", type=int, nargs="+", default=[32, 64])
    p.add_argument("--block-v", type=int, nargs="+", default=[32, 64])
    p.add_argument("--warps", type=int, nargs="+", default=[4, 8])
    p.add_argument("--stages", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", type=Path, default=Path("experiments/bench/results/triton_regs.json"))
    return p.parse_args(argv)


def sweep(args: argparse.Namespace) -> list[dict]:
    rows = []
    configs = itertools.product(args.chunks, args.block_v, args.warps, args.stages)
    for C, BV, warps, stages in configs:
        variants = [(n, False) for n in triton_compile.KERNELS]
        variants += [(n, True) for n in triton_compile.USES_W]
        for name, has_w in variants:
            kernel = triton_compile.compile_kernel(
                name, args.dtype, K=args.K, V=args.V, C=C, BV=BV, num_warps=warps,
                num_stages=stages, has_w=has_w,
            )  # fmt: skip
            res = triton_compile.resources(kernel)
            row = dict(kernel=name + ("+w" if has_w else ""), C=C, BV=BV, num_warps=warps,
                       num_stages=stages, **res)  # fmt: skip
            rows.append(row)
            print(row, flush=True)
    return rows


def markdown(result: dict) -> str:
    s = result["shape"]
    lines = [
        f"# Triton kernels on sm_90: registers and spills (ptxas, triton {result['triton']})",
        "",
        f"K={s['K']} V={s['V']} {s['dtype']}; spill = spill store + load bytes per thread; "
        f"wgmma / mma.sync: product instructions in the PTX (Hopper's wgmma needs 64-row tiles); "
        f"linmix's defaults: {result['defaults']}.",
        "",
        "| kernel | C | BV | warps | stages | registers | spill bytes | shared KiB | wgmma | "
        "mma.sync |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        spill = r["spill_stores"] + r["spill_loads"]
        lines.append(
            f"| {r['kernel']} | {r['C']} | {r['BV']} | {r['num_warps']} | {r['num_stages']} | "
            f"{r['registers']} | {spill} | {r['shared'] / 1024:.0f} | {r['wgmma']} | "
            f"{r['mma_sync']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    result = dict(
        machine=machine_info(),
        triton=triton.__version__,
        shape=dict(K=args.K, V=args.V, dtype=args.dtype),
        defaults=dict(
            **dataclasses.asdict(gla_triton.JAX_TRITON_LAUNCH),
            max_chunk=gla_triton.MAX_CHUNK,
            block_v=gla_triton.MAX_BLOCK_V,
        ),
        rows=sweep(args),
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    md = markdown(result)
    args.json.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
