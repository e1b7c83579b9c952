"""RetNet (Sun et al. 2023), multi-scale retention. Engine L, fixed per-head scalar decay.

Decay a_h = 1 - 2^(-5-h); rotary q, k; output RMSNorm(o) * swish(x W_g). Defaults follow fla's
`layers/multiscale_retention.py` (docs/mixers.md#retnet).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import positions, rotary
from linmix.models.mixers.common import LinearMixer, LinearOptions, advance
from linmix.models.mixers.recurrent import run_gla


@dataclasses.dataclass(frozen=True)
class RetNetOptions(LinearOptions):
    expand_k: float = 1.0
    expand_v: float = 2.0


def retnet_log_decay(num_heads: int) -> jax.Array:
    """log(1 - 2^(-5-h)) for h = 0..H-1: head h remembers roughly 2^(5+h) tokens."""
    return jnp.log1p(-(2.0 ** (-5.0 - jnp.arange(num_heads, dtype=jnp.float32))))


class RetNet(LinearMixer, nnx.Module):
    """Multi-scale retention, RetNet (Sun, Dong, Huang, Ma, Xia, Xue, Wang & Wei, 2023,
    arXiv:2307.08621).

    Engine L (`linmix.ops.gla`) with a fixed scalar decay per head, lambda_h = 1 - 2^(-5-h) (head
    h remembers about 2^(5+h) tokens), rotary q and k, scale K^-1/2, chunked form; output is a
    per-head RMSNorm times swish(x W_g), then W_o. Causal: decodes from a fixed-size cache (the
    state, the short-conv tails and the position for the rotary embedding).

    Options (defaults of the paper and fla's `layers/multiscale_retention.py`; num_heads: `Mixer`):
        expand_k (1.0), expand_v (2.0): total key / value width over all heads, times d_model.
        use_short_conv (False), conv_size (4): causal depthwise conv of conv_size taps, then
            SiLU, on q, k and v (not in the paper).
        use_output_gate (True): the swish(x W_g) output gate; False leaves the RMSNorm alone.
    """

    name = "retnet"
    Options = RetNetOptions

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.build(cfg, rngs)

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        (q_BTHK, k_BTHK, v_BTHV), conv = self.qkv(x_BTD, segment_ids, cache and cache["conv"])
        b, t, h, _ = q_BTHK.shape
        pos_BT = positions(segment_ids, b, t) + (0 if cache is None else cache["pos"])
        q_BTHK, k_BTHK = rotary(q_BTHK, pos_BT), rotary(k_BTHK, pos_BT)
        g_BTH = jnp.broadcast_to(retnet_log_decay(h), (b, t, h))
        o_BTHV, state = run_gla(
            q_BTHK,
            k_BTHK,
            v_BTHV,
            g_BTH,
            state=cache and cache["state"],
            segment_ids=segment_ids,
            chunk_size=self.chunk_size,
        )
        return self.output(o_BTHV, x_BTD), advance(cache, t, state=state, conv=conv)
