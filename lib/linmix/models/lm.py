"""Causal language model: embed -> scanned units of pre-norm blocks -> norm -> logits.

A unit holds one block per letter of `layer_pattern` ("L" the configured mixer, "A" softmax
attention, "C" a gated short convolution); units are created with `jax.vmap` (parameters
stacked on a leading axis) and run with `lax.scan`, so compile time does not grow with depth.
Works in NNX tree mode: the model is a pytree.

Decoding: `cache = lm.init_cache(batch, max_len)` holds every block's mixer cache (stacked over
units like the parameters: fixed-size states for linear mixers, a key/value cache for softmax
attention), and `lm(tokens_BT, cache=cache) -> (logits_BTE, cache)` consumes T more tokens: the
chunked form for a prompt (prefill), the recurrent step for T = 1. Decoding past what the cache
holds (a softmax layer's max_len keys) raises on eager calls and gives NaN logits under jit
(`linmix.ops.checked` turns that into the error too).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.config import ModelConfig
from linmix.models.layers import DTYPES, GLUMLP, rms_norm
from linmix.models.mixers import REGISTRY
from linmix.models.mixers.base_conv import BaseConv
from linmix.ops.common.checks import check_cache_room, check_token_ids
from linmix.ops.dispatch import use_implementations
from linmix.parallel.context import shard_tokens

REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Block(nnx.Module):
    """x + mixer(norm(x)), then x + mlp(norm(x)) when the MLP is enabled."""

    def __init__(self, cfg: ModelConfig, code: str, *, rngs: nnx.Rngs):
        dtype = DTYPES[cfg.dtype]
        self.norm1 = rms_norm(cfg.d_model, rngs=rngs, dtype=dtype, eps=cfg.norm_eps)
        if code == "C":
            self.mixer = BaseConv(cfg, rngs=rngs, options=cfg.conv_options)
        elif code == "A" and cfg.mixer != "attention":
            self.mixer = REGISTRY["attention"](cfg, rngs=rngs, options={})
        else:
            self.mixer = REGISTRY[cfg.mixer](cfg, rngs=rngs)
        hidden = int(cfg.mlp_ratio * cfg.d_model)
        if hidden > 0:
            self.norm2 = rms_norm(cfg.d_model, rngs=rngs, dtype=dtype, eps=cfg.norm_eps)
            self.mlp = GLUMLP(cfg.d_model, hidden, rngs=rngs, dtype=dtype)
        else:
            self.norm2, self.mlp = None, None

    def __call__(self, x_BTD: jax.Array, segment_ids: jax.Array | None, cache=None):
        """(x, the mixer's advanced cache, None without one)."""
        y_BTD, cache = self.mixer(self.norm1(x_BTD), segment_ids=segment_ids, cache=cache)
        x_BTD = x_BTD + y_BTD.astype(x_BTD.dtype)
        if self.mlp is not None:
            x_BTD = x_BTD + self.mlp(self.norm2(x_BTD)).astype(x_BTD.dtype)
        return x_BTD, cache


class Unit(nnx.Module):
    """One repetition of the layer pattern."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.blocks = nnx.List([Block(cfg, code, rngs=rngs) for code in cfg.layer_pattern])

    def __call__(self, x_BTD: jax.Array, segment_ids: jax.Array | None, caches=None):
        """(x, the blocks' advanced caches, or None without caches)."""
        new = []
        for i, block in enumerate(self.blocks):
            x_BTD, cache = block(x_BTD, segment_ids, None if caches is None else caches[i])
            new.append(cache)
        return x_BTD, None if caches is None else new

    def init_cache(self, batch: int, max_len: int) -> list:
        return [block.mixer.init_cache(batch, max_len) for block in self.blocks]


def parameter_count(cfg: ModelConfig) -> int:
    """Parameters of the LM that `cfg` describes, from shapes only (nothing is allocated)."""
    shapes = jax.eval_shape(lambda: nnx.state(LM(cfg, rngs=nnx.Rngs(0))))
    return sum(x.size for x in jax.tree.leaves(shapes))


class LM(nnx.Module):
    """`LM(cfg, rngs=...)(tokens_BT, segment_ids=None) -> logits_BTE` (fp32 logits)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if not cfg.causal:
            raise ValueError("LM: the causal language model needs a config with causal=True")
        dtype = DTYPES[cfg.dtype]
        self.embed = nnx.Embed(cfg.vocab_size, cfg.d_model, dtype=dtype, rngs=rngs)
        keys = jax.random.split(rngs.params(), cfg.num_units)
        self.units = jax.vmap(lambda key: Unit(cfg, rngs=nnx.Rngs(key)))(keys)
        self.norm = rms_norm(cfg.d_model, rngs=rngs, dtype=dtype, eps=cfg.norm_eps)
        self.head = (
            None
            if cfg.tie_embeddings
            else nnx.Linear(cfg.d_model, cfg.vocab_size, use_bias=False, dtype=dtype, rngs=rngs)
        )
        self.remat = cfg.remat
        self.implementations = tuple(sorted(cfg.implementations.items()))  # static

    def __call__(self, tokens_BT: jax.Array, *, segment_ids: jax.Array | None = None, cache=None):
        """fp32 logits [B, T, E]; with a `cache` (from `init_cache`), (logits, advanced cache)."""
        check_token_ids(tokens_BT, self.embed.num_embeddings)
        if cache is None:
            return self.logits(self.hidden(tokens_BT, segment_ids=segment_ids))
        if segment_ids is not None:
            raise ValueError("LM: segment_ids cannot be used with a cache (a cached row is one "
                             "sequence)")  # fmt: skip
        check_cache_room(cache["pos"], tokens_BT.shape[1], cache["limit"])
        x_BTD = self.embed(tokens_BT)

        def body(h_BTD, unit_and_caches):
            unit, caches = unit_and_caches
            return unit(h_BTD, None, caches)

        with use_implementations(dict(self.implementations)):
            x_BTD, layers = jax.lax.scan(body, x_BTD, (self.units, cache["layers"]))
        pos = cache["pos"] + tokens_BT.shape[1]
        return self.logits(self.norm(x_BTD)), {**cache, "layers": layers, "pos": pos}

    def init_cache(self, batch: int, max_len: int) -> dict:
        """The decode cache before the first token: every block's mixer cache stacked over units
        (`layers`), the tokens consumed (`pos`) and how many it can hold (`limit`: max_len when
        a softmax layer keeps every key, -1 when only fixed-size states are kept)."""
        layers = jax.vmap(lambda unit: unit.init_cache(batch, max_len))(self.units)
        bounded = any(
            block.mixer.cache_limit(max_len) is not None
            for block in self.units.blocks  # stacked blocks: the methods are those of one unit
        )
        limit = jnp.asarray(max_len if bounded else -1, jnp.int32)
        return {"layers": layers, "pos": jnp.zeros((), jnp.int32), "limit": limit}

    def hidden(self, tokens_BT: jax.Array, *, segment_ids: jax.Array | None = None) -> jax.Array:
        """Final-norm hidden states [B, T, D], before the vocabulary projection."""
        check_token_ids(tokens_BT, self.embed.num_embeddings)
        x_BTD = shard_tokens(self.embed(tokens_BT))

        def body(h_BTD, unit):
            return shard_tokens(unit(h_BTD, segment_ids)[0]), None

        if self.remat != "none":
            body = jax.checkpoint(body, policy=REMAT[self.remat])
        with use_implementations(dict(self.implementations)):
            x_BTD, _ = jax.lax.scan(body, x_BTD, self.units)
        return self.norm(x_BTD)

    def logits(self, h_XD: jax.Array) -> jax.Array:
        """fp32 logits for hidden states of any leading shape [..., D]."""
        # Flattened to one 2-D matmul: XLA:CPU runs it several times faster than the 3-D form.
        rows = h_XD.reshape(-1, h_XD.shape[-1])
        row_logits = self.embed.attend(rows) if self.head is None else self.head(rows)
        return row_logits.astype(jnp.float32).reshape(*h_XD.shape[:-1], -1)
