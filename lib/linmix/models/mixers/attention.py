"""Softmax attention (Vaswani et al. 2017), causal, rotary, grouped-query; the hybrid "A" layer."""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from linmix.models.layers import dense, positions, rotary
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.common import QKV
from linmix.ops.attention import attention


@dataclasses.dataclass(frozen=True)
class AttentionOptions(Options):
    num_kv_heads: int | None = None  # None: as many as query heads
    rope: bool = True
    use_short_conv: bool = False  # causal depthwise conv on q, k, v (as in Zoology's hybrids)
    conv_size: int = 4


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

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None):
        b, t, _ = x_BTD.shape
        q_BTHK, k_BTGK, v_BTGK = self.qkv(x_BTD, segment_ids)
        if self.rope:
            pos_BT = positions(segment_ids, b, t)
            q_BTHK, k_BTGK = rotary(q_BTHK, pos_BT), rotary(k_BTGK, pos_BT)
        o_BTHK = attention(q_BTHK, k_BTGK, v_BTGK, segment_ids=segment_ids, causal=True)
        return self.o(o_BTHK.reshape(b, t, -1)), None
