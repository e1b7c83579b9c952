"""RetNet (Sun et al. 2023), multi-scale retention. Engine L, fixed per-head scalar decay (S0).

Decay a_h = 1 - 2^(-5-h); rotary q, k; output RMSNorm(o) * swish(x W_g). Defaults follow fla's
`layers/multiscale_retention.py` (MIXERS.md §2.1).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import positions, rotary
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.common import QKV, GatedOutput
from linmix.ops.gla import gla


@dataclasses.dataclass(frozen=True)
class RetNetOptions(Options):
    expand_k: float = 1.0
    expand_v: float = 2.0
    use_short_conv: bool = False
    conv_size: int = 4
    use_output_gate: bool = True


def retnet_log_decay(num_heads: int) -> jax.Array:
    """log(1 - 2^(-5-h)) for h = 0..H-1: head h remembers roughly 2^(5+h) tokens."""
    return jnp.log1p(-(2.0 ** (-5.0 - jnp.arange(num_heads, dtype=jnp.float32))))


class RetNet(Mixer, nnx.Module):
    name = "retnet"
    Options = RetNetOptions

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.options_from(cfg)
        dtype = self.compute_dtype(cfg)
        self.num_heads = h = o.num_heads or cfg.num_heads
        key_dim, value_dim = int(cfg.d_model * o.expand_k), int(cfg.d_model * o.expand_v)
        self.qkv = QKV(
            cfg.d_model,
            key_dim,
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

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None):
        q_BTHK, k_BTHK, v_BTHV = self.qkv(x_BTD, segment_ids)
        b, t, h, _ = q_BTHK.shape
        pos_BT = positions(segment_ids, b, t)
        q_BTHK, k_BTHK = rotary(q_BTHK, pos_BT), rotary(k_BTHK, pos_BT)
        g_BTH = jnp.broadcast_to(retnet_log_decay(h), (b, t, h))
        o_BTHV, _ = gla(
            q_BTHK, k_BTHK, v_BTHV, g_BTH, segment_ids=segment_ids, chunk_size=self.chunk_size
        )
        return self.output(o_BTHV, x_BTD), None
