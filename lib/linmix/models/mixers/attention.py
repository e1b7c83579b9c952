"""Softmax attention (Vaswani et al. 2017), causal, rotary, grouped-query, optional sliding window
(Beltagy et al. 2020); the hybrid "A" layer. Not a linear mixer: exact softmax (the baseline),
decoded from a key/value cache of max_len slots, or, with a sliding window shorter than max_len, a
ring buffer of `window` slots that decodes without limit."""

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
    """Softmax attention (Vaswani et al., NeurIPS 2017, arXiv:1706.03762), with an optional
    sliding window (Beltagy, Peters & Cohan, "Longformer", 2020, arXiv:2004.05150).

    Exact softmax attention (`linmix.ops.attention`), not a linear recurrence: the recall baseline
    and the "A" layer of hybrid stacks. Rotary q and k, grouped-query heads, scale K^-1/2, W_o.
    Causal: decodes from a key/value cache of max_len slots (its size grows with the context);
    with a window shorter than max_len, from a ring buffer of `window` slots.

    Options (num_heads: `Mixer`):
        num_kv_heads (None): key/value heads for grouped-query attention, dividing num_heads;
            None: as many as query heads.
        rope (True): rotary position embeddings on q and k.
        use_short_conv (False), conv_size (4): causal depthwise conv of conv_size taps, then
            SiLU, on q, k and v (as in Zoology's hybrids).
        window (0): sliding-window length; 0 is full causal attention.
    """

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

    def cache_limit(self, max_len: int) -> int | None:
        return None if self.window is not None and self.window <= max_len else max_len

    def init_cache(self, batch: int, max_len: int) -> dict:
        """Keys and values of max_len positions (a ring of `window` slots when the window is
        shorter), conv tails, and the next position."""
        slots = max_len if self.cache_limit(max_len) else self.window
        kv = jnp.zeros((batch, slots, self.num_kv_heads, self.head_dim), self.dtype)
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
        if self.window is not None and cache["k"].shape[1] == self.window:
            o_BTHV, k_BSGK, v_BSGV = self.ring_decode(q_BTHK, k_BTGK, v_BTGV, cache)
        else:
            slots = cache["k"].shape[1]
            k_BSGK, v_BSGV = (
                jax.lax.dynamic_update_slice_in_dim(c, new.astype(c.dtype), start, axis=1)
                for c, new in ((cache["k"], k_BTGK), (cache["v"], v_BTGV))
            )
            o_BTHV = attention_decode(q_BTHK, k_BSGK, v_BSGV, start, window=self.window)
            # Past the cache's end the keys would be lost: never a silently wrong output.
            o_BTHV = jnp.where(start + t > slots, jnp.nan, o_BTHV)
        new = {"k": k_BSGK, "v": v_BSGV, "conv": conv, "pos": start + t}
        return self.o(o_BTHV.reshape(b, t, -1)), new

    def ring_decode(self, q_BTHK, k_BTGK, v_BTGV, cache):
        """Attention over a ring of `window` slots (slot j holds the newest earlier position
        congruent to j) and the T new keys; the ring then keeps the newest `window` keys."""
        start, slots, t = cache["pos"], cache["k"].shape[1], q_BTHK.shape[1]
        slot_S = jnp.arange(slots)
        held_S = start - 1 - jnp.mod(start - 1 - slot_S, slots)  # < 0: not written yet
        new_T = start + jnp.arange(t)
        key_pos = jnp.concatenate([jnp.where(held_S >= 0, held_S, -1), new_T])
        k_BXGK, v_BXGV = (
            jnp.concatenate([c, new.astype(c.dtype)], axis=1)
            for c, new in ((cache["k"], k_BTGK), (cache["v"], v_BTGV))
        )
        o_BTHV = attention_decode(
            q_BTHK, k_BXGK, v_BXGV, start, window=self.window, key_positions=key_pos
        )
        keep = min(t, slots)  # only the newest `window` keys can be seen again
        at_K = jnp.mod(new_T[t - keep :], slots)
        k_BSGK = cache["k"].at[:, at_K].set(k_BTGK[:, t - keep :].astype(cache["k"].dtype))
        v_BSGV = cache["v"].at[:, at_K].set(v_BTGV[:, t - keep :].astype(cache["v"].dtype))
        return o_BTHV, k_BSGK, v_BSGV
