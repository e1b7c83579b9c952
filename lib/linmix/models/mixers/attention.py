"""Softmax attention (Vaswani et al. 2017), causal, rotary, grouped-query, optional sliding window
(Beltagy et al. 2020); the hybrid "A" layer. Not a linear mixer: exact softmax (the baseline),
decoded from a key/value cache of max_len slots (a sliding window needs only `window` of them,
kept whole here for simplicity)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense, positions, rotary
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.common import QKV
from linmix.ops.attention import attention, attention_decode
from linmix.parallel.context import active
from linmix.parallel.lasp2h import attention_allgather_kv


@dataclasses.dataclass(frozen=True)
class AttentionOptions(Options):
    num_kv_heads: int | None = None  # None: as many as query heads
    rope: bool = True
    use_short_conv: bool = False  # causal depthwise conv on q, k, v (as in Zoology's hybrids)
    conv_size: int = 4
    window: int = 0  # sliding window length; 0: full causal attention


class Attention(Mixer, nnx.Module):
    name = "attention"
    Options = AttentionOptions

    @classmethod
    def check(cls, cfg, opts) -> None:
        super().check(cfg, opts)
        heads = opts.num_heads or cfg.num_heads
        kv = opts.num_kv_heads or heads
        if heads % kv:
            raise ValueError(f"mixer 'attention': num_heads={heads} not divisible by {kv} kv heads")
        if opts.window < 0:
            raise ValueError(f"mixer 'attention': window must be >= 0, got {opts.window}")

    def __init__(self, cfg, *, rngs: nnx.Rngs, options: dict | None = None):
        o = self.options_from(cfg, options)
        dtype = self.compute_dtype(cfg)
        self.num_heads = h = o.num_heads or cfg.num_heads
        self.num_kv_heads = hkv = o.num_kv_heads or h
        width = cfg.d_model // h * h
        self.qkv = QKV(
            cfg.d_model,
            width,
            width,
            h,
            num_kv_heads=hkv,
            short_conv=o.use_short_conv,
            conv_size=o.conv_size,
            rngs=rngs,
            dtype=dtype,
        )
        self.o = dense(width, cfg.d_model, rngs=rngs, dtype=dtype)
        self.rope = o.rope
        self.window = o.window or None
        self.head_dim = width // h
        self.dtype = dtype

    def init_cache(self, batch: int, max_len: int) -> dict:
        """Keys and values of max_len positions, conv tails, and the next position."""
        kv = jnp.zeros((batch, max_len, self.num_kv_heads, self.head_dim), self.dtype)
        pos = jnp.zeros((), jnp.int32)
        return {"k": kv, "v": kv, "conv": self.qkv.init_cache(batch), "pos": pos}

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        b, t, _ = x_BTD.shape
        (q_BTHK, k_BTGK, v_BTGV), conv = self.qkv(x_BTD, segment_ids, cache and cache["conv"])
        start = 0 if cache is None else cache["pos"]
        if self.rope:
            pos_BT = positions(segment_ids, b, t) + start
            q_BTHK, k_BTGK = rotary(q_BTHK, pos_BT), rotary(k_BTGK, pos_BT)
        if cache is None:
            sp = active()  # sequence sharded: LASP-2H, one all-gather of K, V
            op = attention if sp is None else attention_allgather_kv(sp.mesh, sp.axis)
            o_BTHV = op(q_BTHK, k_BTGK, v_BTGV, segment_ids=segment_ids, window=self.window)
            return self.o(o_BTHV.reshape(b, t, -1)), None
        k_BSGK, v_BSGV = (
            jax.lax.dynamic_update_slice_in_dim(c, new.astype(c.dtype), start, axis=1)
            for c, new in ((cache["k"], k_BTGK), (cache["v"], v_BTGV))
        )
        o_BTHV = attention_decode(q_BTHK, k_BSGK, v_BSGV, start, window=self.window)
        new = {"k": k_BSGK, "v": v_BSGV, "conv": conv, "pos": start + t}
        return self.o(o_BTHV.reshape(b, t, -1)), new
