"""Text generation: prefill the prompt with the chunked form, then decode one token at a time with
the recurrent steps, in one compiled loop (no per-token Python dispatch).

    python -m linmix.generate --workdir=runs/shakespeare --prompt="ROMEO." --max_new_tokens=200

From Python: `model, config, step = load(workdir)` restores a trained run's model (the newest
checkpoint's parameters), and `generate(model, prompts, max_new_tokens=..., key=...)` continues
a batch of token-id prompts. Sampling: greedy (`temperature=0`), or temperature with optional
top-k and top-p (nucleus) filtering, from an explicit PRNG key; generation stops per row at a
stop token or after the budget. Prompts of different lengths are generated in groups of equal
length, so each row is what it would be alone.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from ml_collections import ConfigDict

from linmix.data.tokenizer import load_tokenizer
from linmix.models import LM, ModelConfig
from linmix.train.checkpoint import Checkpointer, from_nested


def load(workdir: str | Path) -> tuple[LM, ConfigDict, int]:
    """(model, config, step) of the newest checkpoint in a training run's workdir."""
    workdir = Path(workdir)
    if not (workdir / "config.json").is_file():
        raise FileNotFoundError(f"{workdir} is not a linmix run directory (no config.json)")
    config = ConfigDict(json.loads((workdir / "config.json").read_text()))
    model_cfg = ModelConfig(**config.model.to_dict())
    nnx.set_graph_mode(False)
    abstract = jax.eval_shape(lambda: LM(model_cfg, rngs=nnx.Rngs(0)))
    ckpt = Checkpointer(workdir / "checkpoints", every=1, keep=1)
    try:
        step = ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(f"{workdir} has no checkpoint yet")
        args = ocp.args.Composite(state=ocp.args.StandardRestore())
        nested = ckpt.manager.restore(step, args=args).state
    finally:
        ckpt.close()
    model = from_nested(abstract, nested["model"])
    model = jax.tree.map(jnp.asarray, model)
    return model, config, int(step)


def sample(logits_BE: jax.Array, key, temperature: float, top_k: int, top_p: float) -> jax.Array:
    """One token per row: argmax at temperature 0, else from softmax(logits / temperature) kept
    to the top_k most likely tokens (0: all) and the smallest set holding top_p of the mass."""
    if temperature <= 0:
        return jnp.argmax(logits_BE, axis=-1).astype(jnp.int32)
    logits_BE = logits_BE / temperature
    if top_k > 0:
        kth_B1 = jax.lax.top_k(logits_BE, top_k)[0][:, -1:]
        logits_BE = jnp.where(logits_BE < kth_B1, -jnp.inf, logits_BE)
    if top_p < 1.0:
        sorted_BE = jnp.sort(logits_BE, axis=-1)[:, ::-1]
        probs_BE = jax.nn.softmax(sorted_BE, axis=-1)
        before_BE = jnp.cumsum(probs_BE, axis=-1) - probs_BE  # mass of the more likely tokens
        kept = jnp.sum(before_BE < top_p, axis=-1, keepdims=True)  # always >= 1
        cutoff_B1 = jnp.take_along_axis(sorted_BE, kept - 1, axis=-1)
        logits_BE = jnp.where(logits_BE < cutoff_B1, -jnp.inf, logits_BE)
    return jax.random.categorical(key, logits_BE, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("steps", "temperature", "top_k", "top_p", "stops"))
def _generate(model, prompt_BT, cache, key, *, steps, temperature, top_k, top_p, stops):
    logits_BTE, cache = model(prompt_BT, cache=cache)
    keys = jax.random.split(key, steps)
    stop_S = jnp.asarray(stops if stops else (-1,), jnp.int32)

    def emit(tok_B, done_B):
        tok_B = jnp.where(done_B, -1, tok_B)
        return tok_B, done_B | jnp.isin(tok_B, stop_S)

    first_B, done_B = emit(
        sample(logits_BTE[:, -1], keys[0], temperature, top_k, top_p),
        jnp.zeros(prompt_BT.shape[0], bool),
    )

    def body(carry, k):
        tok_B, cache, done_B = carry
        logits_B1E, cache = model(jnp.maximum(tok_B, 0)[:, None], cache=cache)
        nxt_B, done_B = emit(sample(logits_B1E[:, 0], k, temperature, top_k, top_p), done_B)
        return (nxt_B, cache, done_B), nxt_B

    _, rest_SB = jax.lax.scan(body, (first_B, cache, done_B), keys[1:])
    return jnp.concatenate([first_B[:, None], rest_SB.T], axis=1)


def generate(
    model: LM,
    prompts: Sequence[Sequence[int]] | np.ndarray,
    *,
    max_new_tokens: int,
    key: jax.Array | None = None,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop_tokens: Sequence[int] = (),
) -> list[list[int]]:
    """The continuation of each prompt (token ids), up to and including a stop token."""
    prompts = [list(map(int, p)) for p in prompts]
    vocab = model.embed.num_embeddings
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature > 0 and key is None:
        raise ValueError("sampling (temperature > 0) needs an explicit PRNG key")
    if not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"top_p must be in (0, 1] and top_k >= 0, got {top_p}, {top_k}")
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty")
        if min(p) < 0 or max(p) >= vocab:
            raise ValueError(f"prompt {i} has a token id outside the vocabulary [0, {vocab})")
    key = jax.random.key(0) if key is None else key
    out: list[list[int]] = [[] for _ in prompts]
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    for length, rows in sorted(by_length.items()):
        tokens_BT = jnp.asarray([prompts[i] for i in rows], jnp.int32)
        cache = model.init_cache(len(rows), length + max_new_tokens)
        new_BS = _generate(
            model, tokens_BT, cache, jax.random.fold_in(key, length), steps=max_new_tokens,
            temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
            stops=tuple(int(s) for s in stop_tokens),
        )  # fmt: skip
        for i, row in zip(rows, np.asarray(new_BS), strict=True):
            out[i] = [int(t) for t in row if t >= 0]
    return out


def main(argv: Sequence[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(
        prog="python -m linmix.generate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--workdir", required=True, help="a training run's directory")
    p.add_argument("--prompt", action="append", required=True, help="text (repeatable)")
    p.add_argument("--max_new_tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        model, config, step = load(args.workdir)
        if config.task != "lm":
            raise ValueError(
                f"{args.workdir} trained task {config.task!r}; generation needs an lm run"
            )
        tokenizer = load_tokenizer(config.data.path)
        prompts = [tokenizer.encode(text)[0] for text in args.prompt]
        new = generate(
            model, prompts, max_new_tokens=args.max_new_tokens, key=jax.random.key(args.seed),
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        print(f"linmix: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    texts = []
    for prompt, ids in zip(args.prompt, new, strict=True):
        texts.append(prompt + tokenizer.decode(np.asarray(ids)))
        print(f"--- step {step}\n{texts[-1]}", flush=True)
    return texts


if __name__ == "__main__":
    main()
