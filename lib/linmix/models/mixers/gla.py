"""GLA (Yang et al. 2024), gated linear attention. Engine L, vector gate (class Vk), chunked form.

Gate: log a_t = logsigmoid(x W1 W2 + b) / tau with a rank-16 W1 W2 and tau = 16; output
RMSNorm(o) * swish(x W_g). Defaults follow fla's `layers/gla.py` (MIXERS.md §2.2).
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from linmix.models.layers import dense
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.common import QKV, GatedOutput
from linmix.ops.gla import gla


@dataclasses.dataclass(frozen=True)
class GLAOptions(Options):
    expand_k: float = 0.5
    expand_v: float = 1.0
    gate_low_rank_dim: int = 16
    gate_logit_normalizer: float = 16.0
    use_short_conv: bool = False
    conv_size: int = 4
    use_output_gate: bool = True


class GLA(Mixer, nnx.Module):
    name = "gla"
    Options = GLAOptions

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
        self.gate_down = dense(cfg.d_model, o.gate_low_rank_dim, rngs=rngs, dtype=dtype)
        self.gate_up = dense(o.gate_low_rank_dim, key_dim, rngs=rngs, dtype=dtype, use_bias=True)
        self.tau = o.gate_logit_normalizer
        self.output = GatedOutput(
            cfg.d_model, value_dim, value_dim // h, gate=o.use_output_gate, rngs=rngs, dtype=dtype
        )
        self.chunk_size = cfg.chunk_size

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None):
        q_BTHK, k_BTHK, v_BTHV = self.qkv(x_BTD, segment_ids)
        b, t, h, _ = k_BTHK.shape
        logit_BTF = self.gate_up(self.gate_down(x_BTD)).astype(jax.numpy.float32)
        g_BTHK = (jax.nn.log_sigmoid(logit_BTF) / self.tau).reshape(b, t, h, -1)
        o_BTHV, _ = gla(
            q_BTHK, k_BTHK, v_BTHV, g_BTHK, segment_ids=segment_ids, chunk_size=self.chunk_size
        )
        return self.output(o_BTHV, x_BTD), None
