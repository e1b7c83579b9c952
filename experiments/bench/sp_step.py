"""Train-step time of a small LM with the sequence sharded (LASP-2) on 8 fake CPU devices vs 1.

    python experiments/bench/sp_step.py --json experiments/bench/results/sp_step.json

Each mesh runs in its own process (the device count is fixed per process): the same model, batch
and optimizer as the trainer (AdamW, `linmix.train.step.train_step`, state and batch sharded as
`linmix.train.sharding` lays them out), timed over `--steps` steps after two compile/warm-up
steps. Rows: mesh, devices, ms per step (median), tokens/s, and the step's collective bytes
per device from the compiled HLO. On fake CPU devices the 8 "devices" share this machine's
cores, so the ratio shows the overhead of the sharded program, not a speed-up.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MESHES = {  # name -> (devices, mesh sizes)
    "1 device": (1, {"data": 1}),
    "seq=8": (8, {"seq": 8}),
    "data=2 x seq=4": (8, {"data": 2, "seq": 4}),
    "data=8": (8, {"data": 8}),
}


def measure(name: str, args) -> dict:
    """Runs in the child process."""
    import jax
    import numpy as np
    from flax import nnx

    from linmix.models import ModelConfig
    from linmix.parallel import comm, mesh_from_sizes
    from linmix.train import sharding
    from linmix.train.state import init_state, make_optimizer
    from linmix.train.step import train_step

    nnx.set_graph_mode(False)
    _, sizes = MESHES[name]
    cfg = ModelConfig(vocab_size=args.vocab, d_model=args.d_model, num_layers=args.layers,
                      num_heads=args.heads, mixer=args.mixer, layer_pattern=args.pattern,
                      mlp_ratio=2.0, chunk_size=64)  # fmt: skip
    tx = make_optimizer(lr=1e-3, warmup_steps=10, steps=1000, min_lr_ratio=0.1, weight_decay=0.1,
                        b1=0.9, b2=0.98, clip_norm=1.0)  # fmt: skip
    init_fn = functools.partial(init_state, cfg, tx, 0)
    mesh = mesh_from_sizes(sizes, explicit=False)
    state_sh = sharding.state_shardings(jax.eval_shape(init_fn), mesh)
    batch_sh = sharding.batch_sharding(mesh)
    step = jax.jit(sharding.in_mesh(mesh, functools.partial(train_step, tx=tx)),
                   in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, None),
                   donate_argnums=0)  # fmt: skip
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, args.vocab, (args.batch, args.seq_len + 1), dtype=np.int32)
    batch = sharding.put_batch({"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}, batch_sh)
    state = jax.jit(init_fn, out_shardings=state_sh)()
    nbytes = (
        comm.compiled_collective_bytes(step, state, batch)["total"]
        if len(mesh.devices.flat) > 1
        else 0.0
    )
    times = []
    for i in range(args.steps + 2):
        t0 = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics["loss"])
        if i >= 2:
            times.append(time.perf_counter() - t0)
    ms = 1e3 * float(np.median(times))
    return dict(mesh=name, devices=len(mesh.devices.flat), ms_per_step=ms,
                tokens_per_s=args.batch * args.seq_len / (ms / 1e3),
                collective_bytes_per_device=nbytes, loss=float(metrics["loss"]))  # fmt: skip


def markdown(rows: list[dict], args) -> str:
    base = rows[0]["ms_per_step"]
    lines = [
        f"Train step, {args.mixer} {args.pattern!r} x {args.layers} layers, d={args.d_model}, "
        f"B={args.batch}, T={args.seq_len}, fake CPU devices on one machine:",
        "",
        "| mesh | devices | ms / step | vs 1 device | tokens/s | collective MiB / device |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mesh']} | {r['devices']} | {r['ms_per_step']:.1f} | "
            f"{r['ms_per_step'] / base:.2f}x | {r['tokens_per_s']:,.0f} | "
            f"{r['collective_bytes_per_device'] / 2**20:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, default=None, help="write the rows here (+ .md table)")
    p.add_argument("--mixer", default="gla")
    p.add_argument("--pattern", default="LLLA")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return
    rows = []
    for name, (devices, _) in MESHES.items():
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        argv = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                if k not in ("json", "child")]  # fmt: skip
        out = subprocess.run([sys.executable, __file__, *argv, "--child", name], env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    table = markdown(rows, args)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(dict(config=vars(args), rows=rows), indent=1, default=str))
        args.json.with_suffix(".md").write_text(table)


if __name__ == "__main__":
    main()
