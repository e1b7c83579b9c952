"""GLA (Yang et al. 2024), gated linear attention. Engine L, per-channel decay, chunked form.

Gate: log a_t = logsigmoid(x W1 W2 + b) / tau with a rank-16 W1 W2 and tau = 16; output
RMSNorm(o) * swish(x W_g). Defaults follow fla's `layers/gla.py` (docs/mixers.md#gla).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense
from linmix.models.mixers.common import LinearMixer, LinearOptions, advance
from linmix.models.mixers.recurrent import run_gla


@dataclasses.dataclass(frozen=True)
class GLAOptions(LinearOptions):
    expand_k: float = 0.5
    expand_v: float = 1.0
    gate_low_rank_dim: int = 16
    gate_logit_normalizer: float = 16.0


class GLA(LinearMixer, nnx.Module):
    """Gated linear attention, GLA (Yang, Wang, Shen, Panda & Kim, ICML 2024, arXiv:2312.06635).

    Engine L (`linmix.ops.gla`) with a data-dependent decay per key channel, chunked form (with
    secondary chunking): log a_t = logsigmoid(x W_1 W_2 + b) / tau with a low-rank W_1 W_2;
    scale K^-1/2; output is a per-head RMSNorm times swish(x W_g), then W_o. Causal: decodes
    from a fixed-size cache (the state [B, H, K, V] and the short-conv tails).

    Options (defaults of the paper and fla's `layers/gla.py`; num_heads: `Mixer`):
        expand_k (0.5), expand_v (1.0): total key / value width over all heads, times d_model.
        gate_low_rank_dim (16): rank of the gate projection W_1 W_2.
        gate_logit_normalizer (16.0): tau, the divisor of the log-gate; it keeps decays near 1.
        use_short_conv (False), conv_size (4): causal depthwise conv of conv_size taps, then
            SiLU, on q, k and v.
        use_output_gate (True): the swish(x W_g) output gate; False leaves the RMSNorm alone.
    """

    name = "gla"
    Options = GLAOptions

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.build(cfg, rngs)
        dtype = self.compute_dtype(cfg)
        self.gate_down = dense(cfg.d_model, o.gate_low_rank_dim, rngs=rngs, dtype=dtype)
        self.gate_up = dense(
            o.gate_low_rank_dim, self.key_dim, rngs=rngs, dtype=dtype, use_bias=True
        )
        self.tau = o.gate_logit_normalizer

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        (q_BTHK, k_BTHK, v_BTHV), conv = self.qkv(x_BTD, segment_ids, cache and cache["conv"])
        b, t, h, _ = k_BTHK.shape
        logit_BTD = self.gate_up(self.gate_down(x_BTD)).astype(jnp.float32)
        g_BTHK = (jax.nn.log_sigmoid(logit_BTD) / self.tau).reshape(b, t, h, -1)
        o_BTHV, state = run_gla(
            q_BTHK,
            k_BTHK,
            v_BTHV,
            g_BTHK,
            state=cache and cache["state"],
            segment_ids=segment_ids,
            chunk_size=self.chunk_size,
        )
        return self.output(o_BTHV, x_BTD), advance(cache, t, state=state, conv=conv)
