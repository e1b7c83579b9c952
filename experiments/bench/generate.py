"""CPU benchmark of decoding: time and memory per generated token against context length, for the
main linear mixers and softmax attention.

    python experiments/bench/generate.py
    python experiments/bench/generate.py --mixers gla attention --contexts 1024 4096 --steps 8

Method. One `linmix.models.LM` per mixer (d_model 256, 4 layers, 4 heads, vocab 256, the
ModelConfig default mlp_ratio, fp32, each mixer's default options, batch 1). Decoding one token
costs the same whatever the cache holds, so no prompt is prefilled: the cache at context L is
built directly, `model.init_cache(1, L + steps)` with every 'pos' leaf set to L (attention then
attends over L + 1 .. L + steps positions) and every floating leaf filled with random values
(keys and values N(0, 1), linear mixers' states and conv tails 0.1 N(0, 1)), so nothing is
special about zeros.

Time per token: one jitted call runs `--steps` decode steps in a `lax.scan` (greedy: the argmax
is fed back, as `linmix.generate` does), with the cache donated and passed on from call to call
('pos' reset to L before each call). Compiled once per (mixer, L) and called once untimed, then
`--repeats` calls are timed with block_until_ready, round-robin over the contexts of a mixer
(so that load changes on a shared machine hit every context alike); the median / steps is
reported.

Memory per token: the cache's bytes (sum of its leaves' nbytes) plus the temp bytes of one
compiled decode step (`model(tokens_B1, cache=cache)`, cache donated) from memory_analysis();
parameters are not counted (the same at every context).

A (mixer, L) case is skipped, with the reason in the JSON and the table, when its cache would
need more than --max-cache-gib or the step more than that in temp memory, or when anything
raises; the run goes on.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
from flax import nnx

from linmix.models import LM, ModelConfig, parameter_count

MIB = 1 << 20
GIB = 1 << 30
MIXERS = ["attention", "gla", "retnet", "mamba2", "deltanet", "gated_deltanet", "mamba"]
MIXERS += ["linear_attn", "hgrn2"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--mixers", nargs="+", default=list(MIXERS))
    p.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    p.add_argument("--steps", type=int, default=32, help="decode steps per timed call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--d-model", "--d_model", dest="d_model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--max-cache-gib", "--max_cache_gib", dest="max_cache_gib", type=float,
                   default=8.0, help="skip a case whose cache or step temp needs more")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("experiments/bench/results"))
    p.add_argument("--name", default="generate_cpu", help="stem of the output files")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine_info() -> dict:
    def git(*cmd: str) -> str | None:
        try:
            return subprocess.run(["git", *cmd], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None

    commit, status = (
        git("rev-parse", "--short", "HEAD"),
        git("--no-optional-locks", "status", "--porcelain", "lib"),
    )
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
        "git_commit": commit and commit.strip(),
        "git_lib_modified": None if status is None else bool(status.strip()),
    }


def model_config(mixer: str, args: argparse.Namespace) -> ModelConfig:
    return ModelConfig(mixer=mixer, d_model=args.d_model, num_layers=args.layers,
                       num_heads=args.heads, vocab_size=args.vocab, layer_pattern="L",
                       dtype="float32")  # fmt: skip


def leaf_name(path) -> str:
    last = path[-1] if path else None
    return str(getattr(last, "key", getattr(last, "name", "")))


def cache_at(model: LM, context: int, steps: int, key: jax.Array):
    """The decode cache after `context` tokens: 'pos' leaves = context, random floats."""
    cache = model.init_cache(1, context + steps)
    paths, treedef = jax.tree_util.tree_flatten_with_path(cache)
    keys = jax.random.split(key, len(paths))
    leaves = []
    for k, (path, x) in zip(keys, paths, strict=True):
        name = leaf_name(path)
        if name == "pos":
            x = jnp.full(x.shape, context, x.dtype)
        elif jnp.issubdtype(x.dtype, jnp.floating):
            scale = 1.0 if name in ("k", "v") else 0.1
            x = (scale * jax.random.normal(k, x.shape, jnp.float32)).astype(x.dtype)
        leaves.append(x)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def reset_pos(cache, context: int):
    return jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.full(x.shape, context, x.dtype) if leaf_name(p) == "pos" else x, cache
    )


def nbytes(tree) -> int:
    return sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def step(model: LM, tok_B1: jax.Array, cache):
    """One decode step: (logits [B, 1, E], advanced cache)."""
    return model(tok_B1, cache=cache)


def decode(model: LM, tok_B: jax.Array, cache, *, steps: int):
    """`steps` greedy decode steps in one scan: (tokens [steps, B], cache)."""

    def body(carry, _):
        tok_B, cache = carry
        logits_B1E, cache = model(tok_B[:, None], cache=cache)
        nxt_B = jnp.argmax(logits_B1E[:, 0], axis=-1).astype(jnp.int32)
        return (nxt_B, cache), nxt_B

    (_, cache), toks_SB = jax.lax.scan(body, (tok_B, cache), None, length=steps)
    return toks_SB, cache


def memory_mib(compiled) -> dict:
    try:
        mem = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return {}
    if mem is None:
        return {}
    parts = ("temp", "argument", "output", "alias")
    return {p: (getattr(mem, f"{p}_size_in_bytes", 0) or 0) / MIB for p in parts}


class Case:
    """One (mixer, context): its row, and once prepared, the compiled decode loop and its cache."""

    def __init__(self, mixer: str, context: int, steps: int):
        self.row: dict = {"mixer": mixer, "context": context, "max_len": context + steps}
        self.context, self.steps = context, steps
        self.compiled = self.cache = None
        self.times: list[float] = []

    def prepare(self, model: LM, args: argparse.Namespace, key) -> None:
        """Memory, compile, one untimed call; or row['skipped']. Never raises (but Ctrl-C)."""
        row, limit = self.row, args.max_cache_gib * GIB
        try:
            shapes = jax.eval_shape(lambda: model.init_cache(1, row["max_len"]))
            cache_bytes = nbytes(shapes)
            row["cache_mib"] = cache_bytes / MIB
            if cache_bytes > limit:
                row["skipped"] = (
                    f"cache needs {cache_bytes / GIB:.3g} GiB > --max-cache-gib "
                    f"{args.max_cache_gib:g}"
                )
                return
            cache = cache_at(model, self.context, self.steps, key)
            self.tok_B = jnp.zeros((1,), jnp.int32)
            step_mem = memory_mib(
                jax.jit(step, donate_argnums=2).lower(model, self.tok_B[:, None], cache).compile()
            )
            row["step_temp_mib"] = step_mem.get("temp")
            row["step_memory_mib"] = step_mem
            if (row["step_temp_mib"] or 0) * MIB > limit:
                row["skipped"] = (
                    f"one step needs {row['step_temp_mib'] / 1024:.3g} GiB temp > "
                    f"--max-cache-gib {args.max_cache_gib:g}"
                )
                return
            row["total_mib"] = row["cache_mib"] + (row["step_temp_mib"] or 0.0)
            t0 = time.perf_counter()
            fn = functools.partial(decode, steps=self.steps)
            self.compiled = jax.jit(fn, donate_argnums=2).lower(model, self.tok_B, cache).compile()
            row["compile_s"] = time.perf_counter() - t0
            row["decode_memory_mib"] = memory_mib(self.compiled)
            _, self.cache = jax.block_until_ready(self.compiled(model, self.tok_B, cache))
        except Exception as e:  # e.g. out of memory: recorded, the run goes on
            row["skipped"] = f"error: {type(e).__name__}: {str(e)[:300]}"
            self.compiled = self.cache = None

    def time_once(self, model: LM) -> None:
        """One timed call of `steps` decode steps from context L."""
        if self.compiled is None:
            return
        try:
            cache = jax.block_until_ready(reset_pos(self.cache, self.context))
            t0 = time.perf_counter()
            _, self.cache = jax.block_until_ready(self.compiled(model, self.tok_B, cache))
            self.times.append((time.perf_counter() - t0) / self.steps)
        except Exception as e:
            self.row["skipped"] = f"error: {type(e).__name__}: {str(e)[:300]}"
            self.compiled = self.cache = None

    def finish(self) -> dict:
        """The row, with the median time when every call ran; frees the cache."""
        if self.times and "skipped" not in self.row:
            median_s = statistics.median(self.times)
            self.row.update(
                times_ms_per_token=[t * 1e3 for t in self.times],
                ms_per_token=median_s * 1e3,
                min_ms_per_token=min(self.times) * 1e3,
            )
        self.compiled = self.cache = None
        return self.row


def summary(rows: list[dict], mixers: list[str]) -> list[dict]:
    """Per mixer: longest / shortest measured context, for time and memory."""
    out = []
    for m in mixers:
        done = sorted((r for r in rows if r["mixer"] == m and "ms_per_token" in r),
                      key=lambda r: r["context"])  # fmt: skip
        s = {"mixer": m, "time_ratio": None, "memory_ratio": None, "contexts": None}
        if len(done) >= 2:
            lo, hi = done[0], done[-1]
            s.update(
                contexts=[lo["context"], hi["context"]],
                time_ratio=hi["ms_per_token"] / lo["ms_per_token"],
                memory_ratio=hi["total_mib"] / lo["total_mib"],
            )
        skipped = [r for r in rows if r["mixer"] == m and "skipped" in r]
        s["stops_at"] = min((r["context"] for r in skipped), default=None)
        out.append(s)
    return out


def ctx_label(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def markdown(result: dict) -> str:
    m, c = result["machine"], result["config"]
    contexts = sorted(c["contexts"])
    by = {(r["mixer"], r["context"]): r for r in result["rows"]}
    labels = [ctx_label(n) for n in contexts]
    lines = [
        f"# Decoding cost per token on CPU ({m['date']}, jax {m['jax']}, {m['device']}, "
        f"{m['cpus_usable']} usable CPUs)",
        "",
        f"LM d_model={c['d_model']}, {c['layers']} layers, {c['heads']} heads, vocab "
        f"{c['vocab']}, mlp_ratio {result['mlp_ratio']:g}, fp32, batch 1, each mixer's default "
        f"options. Context L: the cache is built at L directly (init_cache(1, L + {c['steps']}), "
        "'pos' = L, random keys/values/states; no prefill). ms/token: median over "
        f"{c['repeats']} calls of one jitted scan of {c['steps']} greedy decode steps, / "
        f"{c['steps']}. MiB: cache bytes + temp bytes of one compiled decode step "
        "(memory_analysis; parameters not counted). Ratio: longest / shortest measured context.",
        "",
        "| mixer | params | "
        + " | ".join(f"ms/token {x}" for x in labels)
        + " | "
        + " | ".join(f"MiB {x}" for x in labels)
        + " | time ratio | memory ratio |",
        "|---|---:|" + "---:|" * (2 * len(contexts) + 2),
    ]
    notes = []
    for s in result["summary"]:
        mixer = s["mixer"]
        rs = [by.get((mixer, n), {}) for n in contexts]
        ms = [f"{r['ms_per_token']:.3g}" if "ms_per_token" in r else "—" for r in rs]
        mib = [f"{r['total_mib']:.3g}" if "ms_per_token" in r else "—" for r in rs]
        ratios = [
            f"{s[k]:.2f}x" if s[k] is not None else "—" for k in ("time_ratio", "memory_ratio")
        ]
        params = f"{result['params'].get(mixer, 0) / 1e6:.2f}M"
        lines.append("| " + " | ".join([mixer, params, *ms, *mib, *ratios]) + " |")
        for n, r in zip(contexts, rs, strict=True):
            if "skipped" in r:
                notes.append(f"- {mixer} at {ctx_label(n)}: skipped: {r['skipped']}")
    lines += ["", "Memory split, cache MiB + one step's temp MiB:", ""]
    lines += ["| mixer | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(contexts)]
    for s in result["summary"]:
        cells = []
        for n in contexts:
            r = by.get((s["mixer"], n), {})
            if "total_mib" in r:
                cells.append(f"{r['cache_mib']:.3g} + {r['step_temp_mib'] or 0:.3g}")
            else:
                cells.append("—")
        lines.append("| " + " | ".join([s["mixer"], *cells]) + " |")
    if notes:
        lines += ["", "Skipped:", "", *notes]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for s in result["summary"]:
        rs = sorted((r for r in result["rows"] if r["mixer"] == s["mixer"] and "ms_per_token" in r),
                    key=lambda r: r["context"])  # fmt: skip
        if not rs:
            continue
        style = dict(marker="o", lw=2.5 if s["mixer"] == "attention" else 1.3, label=s["mixer"])
        x = [r["context"] for r in rs]
        ax_t.plot(x, [r["ms_per_token"] for r in rs], **style)
        ax_m.plot(x, [r["total_mib"] for r in rs], **style)
    for ax, ylabel in ((ax_t, "ms / token (median)"), (ax_m, "MiB (cache + step temp)")):
        ax.set(xscale="log", yscale="log", xlabel="context length", ylabel=ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_m.legend(fontsize=8)
    c = result["config"]
    fig.suptitle(
        f"Decoding per token, CPU, d_model={c['d_model']} x {c['layers']} layers, batch 1, fp32"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    nnx.set_graph_mode(False)
    key = jax.random.key(args.seed)
    result = {
        "machine": machine_info(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "mlp_ratio": model_config(args.mixers[0], args).mlp_ratio,
        "method": __doc__,
        "params": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / f"{args.name}.json", args.out / f"{args.name}.md"

    def write(rows: list[dict]) -> None:
        result.update(rows=rows, summary=summary(rows, args.mixers))
        json_path.write_text(json.dumps(result, indent=1) + "\n")
        md_path.write_text(markdown(result))

    rows: list[dict] = []
    for i, mixer in enumerate(args.mixers):
        cfg = model_config(mixer, args)
        result["params"][mixer] = parameter_count(cfg)
        model = LM(cfg, rngs=nnx.Rngs(args.seed))
        cases = [Case(mixer, n, args.steps) for n in sorted(args.contexts)]
        for case in cases:
            log(f"{mixer} L={case.context}: compiling ...")
            case.prepare(model, args, jax.random.fold_in(jax.random.fold_in(key, i), case.context))
            if "skipped" in case.row:
                log(f"    skipped: {case.row['skipped']}")
        for _ in range(args.repeats):  # round-robin, so load changes hit every context alike
            for case in cases:
                case.time_once(model)
        for case in cases:
            row = case.finish()
            if "ms_per_token" in row:
                log(
                    f"{mixer} L={row['context']}: {row['ms_per_token']:.3f} ms/token, cache "
                    f"{row['cache_mib']:.3g} MiB + step temp {row['step_temp_mib'] or 0:.3g} MiB"
                )
            rows.append(row)
        write(rows)
        del model, cases
    write(rows)
    plot(result, args.out / f"{args.name}.png")
    print(markdown(result), flush=True)
    log(f"wrote {json_path}, {md_path}, {args.name}.png")


if __name__ == "__main__":
    main()
