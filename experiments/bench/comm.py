"""Collective bytes per device per layer of sequence-parallel mixers, on 8 fake CPU devices.

    python experiments/bench/comm.py --json experiments/bench/results/comm.jsonl

For each T and method the layer's forward and forward+backward are compiled (never run) on a
mesh seq=W and the collectives in the optimised HLO are counted (`linmix.parallel.comm`). One JSON
object per line: method, T, W, bytes_per_device (forward), bytes_per_device_fwd_bwd. Methods:
lasp2 (engine L, scalar gate: one all-gather of the K x V states), lasp2_delta (engine Δ: states
and K x K transitions), allgather_kv (LASP-2H's softmax layers: all-gather of K, V) and ring
(ring attention, W - 1 hops of the K, V blocks). Shapes: B=1, H=16, K=V=128, fp32. A markdown
table is written beside the JSON (.md).
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from linmix.parallel import comm, delta_rule_sharded, gla_sharded  # noqa: E402
from linmix.parallel.lasp2h import attention_allgather_kv, attention_ring  # noqa: E402


def layers(mesh) -> dict:
    """method -> f(q, k, v, g, beta) -> o, one layer each."""
    lasp2, delta = gla_sharded(mesh), delta_rule_sharded(mesh)
    kv, ring = attention_allgather_kv(mesh), attention_ring(mesh)
    return {
        "lasp2": lambda q, k, v, g, beta: lasp2(q, k, v, g, chunk_size=64)[0],
        "lasp2_delta": lambda q, k, v, g, beta: delta(q, k, v, beta, g, chunk_size=64)[0],
        "allgather_kv": lambda q, k, v, g, beta: kv(q, k, v),
        "ring": lambda q, k, v, g, beta: ring(q, k, v),
    }


def measure(method: str, fn, T: int, args, mesh) -> dict:
    # Abstract inputs: only compiled, so nothing of size T is ever allocated.
    x = (jax.ShapeDtypeStruct((args.B, T, args.H, args.K), jnp.float32),) * 3
    gates = (jax.ShapeDtypeStruct((args.B, T, args.H), jnp.float32),) * 2
    with jax.set_mesh(mesh):
        fwd = comm.compiled_collective_bytes(fn, *x, *gates)["total"]
        loss = jax.grad(lambda q, k, v, g, beta: jnp.sum(fn(q, k, v, g, beta)), argnums=(0, 1, 2))
        fwd_bwd = comm.compiled_collective_bytes(loss, *x, *gates)["total"]
    W = mesh.shape["seq"]
    return dict(method=method, T=T, W=W, bytes_per_device=fwd, bytes_per_device_fwd_bwd=fwd_bwd)


def markdown(rows: list[dict]) -> str:
    Ts = sorted({r["T"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = [
        "Collective MiB per device per layer, forward (forward+backward), W = "
        f"{rows[0]['W']} seq shards, B=1, H=16, K=V=128, fp32:",
        "",
        "| method | " + " | ".join(f"T={t // 1024}k" for t in Ts) + " |",
        "|---|" + "---:|" * len(Ts),
    ]
    for m in methods:
        cells = []
        for t in Ts:
            r = next(r for r in rows if r["method"] == m and r["T"] == t)
            mib = 1 << 20
            cells.append(
                f"{r['bytes_per_device'] / mib:.2f} ({r['bytes_per_device_fwd_bwd'] / mib:.2f})"
            )
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--T", type=int, nargs="+", default=[8192, 32768, 131072, 524288])
    p.add_argument("--W", type=int, default=8)
    p.add_argument("--B", type=int, default=1)
    p.add_argument("--H", type=int, default=16)
    p.add_argument("--K", type=int, default=128)
    p.add_argument("--methods", nargs="+", default=["lasp2", "lasp2_delta", "allgather_kv", "ring"])
    p.add_argument("--json", type=Path, default=Path("experiments/bench/results/comm.jsonl"))
    args = p.parse_args()
    mesh = jax.make_mesh((args.W,), ("seq",), axis_types=(jax.sharding.AxisType.Explicit,))
    fns = layers(mesh)
    rows = []
    args.json.parent.mkdir(parents=True, exist_ok=True)
    with args.json.open("w") as f:
        for T in args.T:
            for method in args.methods:
                row = measure(method, fns[method], T, args, mesh)
                print(json.dumps(row), flush=True)
                f.write(json.dumps(row) + "\n")
                rows.append(row)
    args.json.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
