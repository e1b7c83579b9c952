"""Softmax attention (Vaswani et al. 2017), causal, rotary, grouped-query; the hybrid "A" layer."""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from linmix.models.layers import dense, positions, rotary
from linmix.models.mixers.base import Mixer, Options
from linmix.ops.attention import attention


@dataclasses.dataclass(frozen=True)
class AttentionOptions(Options):
    num_kv_heads: int | None = None  # None: as many as query heads
    rope: bool = True


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

    def __init__(self, cfg, *, rngs: nnx.Rngs, options: dict | None = None):
        o = self.options_from(cfg, options)
        dtype = self.compute_dtype(cfg)
        self.num_heads = h = o.num_heads or cfg.num_heads
        self.num_kv_heads = hkv = o.num_kv_heads or h
        head_dim = cfg.d_model // h
        self.q = dense(cfg.d_model, h * head_dim, rngs=rngs, dtype=dtype)
        self.k = dense(cfg.d_model, hkv * head_dim, rngs=rngs, dtype=dtype)
        self.v = dense(cfg.d_model, hkv * head_dim, rngs=rngs, dtype=dtype)
        self.o = dense(h * head_dim, cfg.d_model, rngs=rngs, dtype=dtype)
        self.rope = o.rope

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None):
        b, t, _ = x_BTD.shape
        q_BTHK = self.q(x_BTD).reshape(b, t, self.num_heads, -1)
        k_BTGK = self.k(x_BTD).reshape(b, t, self.num_kv_heads, -1)
        v_BTGK = self.v(x_BTD).reshape(b, t, self.num_kv_heads, -1)
        if self.rope:
            pos_BT = positions(segment_ids, b, t)
            q_BTHK, k_BTGK = rotary(q_BTHK, pos_BT), rotary(k_BTGK, pos_BT)
        o_BTHK = attention(q_BTHK, k_BTGK, v_BTGK, segment_ids=segment_ids, causal=True)
        return self.o(o_BTHK.reshape(b, t, -1)), None
