"""Projection and output pieces shared by the engine-L mixers (linear_attn, retnet, gla)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import ShortConv, dense, rms_norm
from linmix.models.mixers.base import Mixer, Options


class QKV(nnx.Module):
    """x -> per-head q [B,T,H,K], k [B,T,G,K], v [B,T,G,V], with an optional causal short conv.

    `key_dim`, `value_dim` are totals over heads; k and v have `num_kv_heads` heads (G, default H),
    so their widths are key_dim * G / H and value_dim * G / H (grouped-query attention).
    """

    def __init__(
        self,
        d_model: int,
        key_dim: int,
        value_dim: int,
        num_heads: int,
        *,
        short_conv: bool,
        conv_size: int,
        rngs: nnx.Rngs,
        dtype,
        num_kv_heads: int | None = None,
    ):
        self.num_heads = num_heads
        self.num_kv_heads = g = num_kv_heads or num_heads
        dims = (key_dim, key_dim * g // num_heads, value_dim * g // num_heads)
        self.q, self.k, self.v = (dense(d_model, n, rngs=rngs, dtype=dtype) for n in dims)
        convs = [ShortConv(n, conv_size, rngs=rngs, dtype=dtype) for n in dims]
        self.convs = nnx.List(convs) if short_conv else None

    def init_cache(self, batch: int) -> list[jax.Array] | None:
        """The short convs' input tails (None without convs)."""
        return None if self.convs is None else [c.init_cache(batch) for c in self.convs]

    def __call__(self, x_BTD: jax.Array, segment_ids_BT: jax.Array | None, cache=None):
        """([q, k, v], new conv cache); `cache` continues the convs from `init_cache`'s tails."""
        qkv = [self.q(x_BTD), self.k(x_BTD), self.v(x_BTD)]
        if self.convs is not None:
            if cache is None:
                qkv = [c(y, segment_ids_BT) for c, y in zip(self.convs, qkv, strict=True)]
            else:
                pairs = [c.extend(y, w) for c, y, w in zip(self.convs, qkv, cache, strict=True)]
                qkv, cache = [p[0] for p in pairs], [p[1] for p in pairs]
            # The conv is a local token mixer; SiLU after it as in the papers that use one.
            qkv = [jax.nn.silu(y) for y in qkv]
        b, t, _ = x_BTD.shape
        heads = (self.num_heads, self.num_kv_heads, self.num_kv_heads)
        return [y.reshape(b, t, h, -1) for y, h in zip(qkv, heads, strict=True)], cache


class GatedOutput(nnx.Module):
    """Per-head RMSNorm of the mixer output, optionally times swish(x W_g), then W_o."""

    def __init__(
        self, d_model: int, value_dim: int, head_v: int, *, gate: bool, rngs: nnx.Rngs, dtype
    ):
        self.norm = rms_norm(head_v, rngs=rngs, dtype=dtype)
        self.gate = dense(d_model, value_dim, rngs=rngs, dtype=dtype) if gate else None
        self.out = dense(value_dim, d_model, rngs=rngs, dtype=dtype)

    def __call__(self, o_BTHV: jax.Array, x_BTD: jax.Array) -> jax.Array:
        b, t, _, _ = o_BTHV.shape
        y_BTD = self.norm(o_BTHV).reshape(b, t, -1)
        if self.gate is not None:
            y_BTD = y_BTD * jax.nn.silu(self.gate(x_BTD))
        return self.out(y_BTD)


@dataclasses.dataclass(frozen=True)
class LinearOptions(Options):
    """Options shared by the engine-L mixers; each mixer overrides the defaults of its paper."""

    expand_k: float = 1.0
    expand_v: float = 1.0
    use_short_conv: bool = False
    conv_size: int = 4
    use_output_gate: bool = True


class LinearMixer(Mixer):
    """Constructor shared by engine-L mixers: q/k/v (+ short conv) in, normed (gated) output out."""

    def build(self, cfg, rngs: nnx.Rngs) -> LinearOptions:
        o = self.options_from(cfg)
        dtype = self.compute_dtype(cfg)
        self.num_heads = h = o.num_heads or cfg.num_heads
        self.key_dim = int(cfg.d_model * o.expand_k)
        value_dim = int(cfg.d_model * o.expand_v)
        self.qkv = QKV(
            cfg.d_model,
            self.key_dim,
            value_dim,
            h,
            short_conv=o.use_short_conv,
            conv_size=o.conv_size,
            rngs=rngs,
            dtype=dtype,
        )
        self.output = GatedOutput(
            cfg.d_model, value_dim, value_dim // h, gate=o.use_output_gate, rngs=rngs, dtype=dtype
        )
        self.chunk_size = cfg.chunk_size
        self.head_v = value_dim // h
        return o

    def init_cache(self, batch: int, max_len: int) -> dict:
        """State [B, H, K, V] fp32, short-conv tails, and the position of the next token."""
        h = self.num_heads
        return {
            "state": jnp.zeros((batch, h, self.key_dim // h, self.state_width), jnp.float32),
            "conv": self.qkv.init_cache(batch),
            "pos": jnp.zeros((), jnp.int32),
        }

    @property
    def state_width(self) -> int:
        """Columns of the state: V, or V + 1 when a denominator column rides along."""
        return self.head_v


def advance(cache: dict | None, t: int, **new) -> dict | None:
    """The cache after t more tokens, with the given entries replaced."""
    if cache is None:
        return None
    return {**cache, **new, "pos": cache["pos"] + t}
