"""Text generation: prefill the prompt with the chunked form, then decode one token at a time with
the recurrent steps, in one compiled loop (no per-token Python dispatch).

    python -m linmix.generate --workdir=runs/lm_attention --prompt="ROMEO." --max_new_tokens=200

From Python: `run = linmix.load(workdir)` restores a trained run's model (the newest checkpoint's
parameters), and `generate(run.model, prompts, max_new_tokens=..., key=...)` continues a batch of
token-id prompts. Sampling: greedy (`temperature=0`), or temperature with optional
top-k and top-p (nucleus) filtering, from an explicit PRNG key; generation stops per row at a
stop token or after the budget. Prompts of different lengths are generated in groups of equal
length, so each row is what it would be alone. `on_token` receives each step's tokens from inside
the compiled loop (streaming). `repeat_prompt=2` is JRT-Prompt (Arora et al. 2024, "Just read
twice"): the prompt is read twice before generating, so a recurrent model has seen the whole
context when it reads it again, and recalls what it needs from it.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from linmix.data.tokenizer import load_tokenizer
from linmix.models import LM
from linmix.train.restore import restore


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


@functools.partial(
    jax.jit, static_argnames=("steps", "temperature", "top_k", "top_p", "stops", "on_token")
)
def _generate(model, prompt_BT, cache, key, *, steps, temperature, top_k, top_p, stops, on_token):
    logits_BTE, cache = model(prompt_BT, cache=cache)
    keys = jax.random.split(key, steps)
    stop_S = jnp.asarray(stops if stops else (-1,), jnp.int32)

    def emit(tok_B, done_B):
        tok_B = jnp.where(done_B, -1, tok_B)
        if on_token is not None:
            io_callback(on_token, None, tok_B, ordered=True)
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
    repeat_prompt: int = 1,
    on_token: Callable[[np.ndarray], None] | None = None,
) -> list[list[int]]:
    """The continuation of each prompt (token ids), up to and including a stop token.

    `repeat_prompt`: read each prompt this many times first (2: JRT-Prompt). `on_token(ids_B)`:
    called at every step with the new token of each row of a group of equal-length prompts
    (-1 for rows already stopped), in order, from inside the compiled loop."""
    if repeat_prompt < 1:
        raise ValueError(f"repeat_prompt must be >= 1, got {repeat_prompt}")
    prompts = [list(map(int, p)) * repeat_prompt for p in prompts]
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
            stops=tuple(int(s) for s in stop_tokens), on_token=on_token,
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
    p.add_argument("--repeat_prompt", type=int, default=1, help="2: JRT-Prompt (read it twice)")
    args = p.parse_args(sys.argv[1:] if argv is None else list(argv))
    texts = []
    try:
        run = restore(args.workdir)
        if run.config.task != "lm":
            raise ValueError(
                f"{args.workdir} trained task {run.config.task!r}; generation needs an lm run"
            )
        tokenizer = load_tokenizer(run.config.data.path)
        print(f"--- {args.workdir}, step {run.step}", flush=True)
        for i, text in enumerate(args.prompt):  # each prompt streamed as it is generated
            stream = Stream(tokenizer, text)
            generate(
                run.model, [tokenizer.encode(text)[0]], max_new_tokens=args.max_new_tokens,
                key=jax.random.fold_in(jax.random.key(args.seed), i),
                temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                repeat_prompt=args.repeat_prompt, on_token=stream,
            )  # fmt: skip
            texts.append(stream.finish())
    except (ValueError, FileNotFoundError) as e:
        print(f"\nlinmix: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    return texts


class Stream:
    """Prints a prompt's continuation as its tokens arrive (text that ends inside a multi-byte
    character waits for the rest of it)."""

    def __init__(self, tokenizer, prompt: str):
        self.tokenizer, self.ids, self.shown = tokenizer, [], ""
        self.prompt = prompt
        print(prompt, end="", flush=True)

    def __call__(self, ids_B: np.ndarray) -> None:
        self.ids.extend(int(t) for t in np.asarray(ids_B)[:1] if t >= 0)
        text = self.tokenizer.decode(np.asarray(self.ids, np.int64))
        if not text.endswith("\ufffd"):
            print(text[len(self.shown) :], end="", flush=True)
            self.shown = text

    def finish(self) -> str:
        text = self.tokenizer.decode(np.asarray(self.ids, np.int64))
        print(text[len(self.shown) :], flush=True)
        return self.prompt + text


if __name__ == "__main__":
    main()
