"""Lightning Attention-2 (Qin et al. 2024) in the TransNormerLLM (TNL) layer. Engine L, fixed
per-head scalar decay, chunked form (Lightning-2's tiling: docs/forms.md#chunked-form-of-engine-l
with b_r = r log λ).

kv_t = λ_h kv_{t-1} + k_t^T v_t and o_t = q_t kv_t, with λ_h = exp(-s_h) from the ALiBi slopes
s_h (2^(-8(h+1)/H) for a power-of-two H), scale 1 and no denominator. q, k, v = SiLU(x W); the
output is Norm(o) * sigmoid(x W_g1 W_g2) W_o, a low-rank gate of rank head_dim and a norm over
the concatenated heads (LayerNorm in the official TNL layer; SimpleRMSNorm is an option).
TNL shrinks the slopes with depth, s_h (1 - l/(L-1) + 1e-5) at layer l of L: `slope_scale`
holds that factor (1: the first layer, and Lightning-2's own slopes). Defaults follow
OpenNLPLab/lightning-attention `examples/module/tnl_attn.py` and `utils/utils.py`
(docs/mixers.md#lightning).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.common import QKV, advance
from linmix.models.mixers.recurrent import run_gla
from linmix.models.mixers.transnormer import simple_rms_norm

NORMS = ("layernorm", "srmsnorm")


@dataclasses.dataclass(frozen=True)
class LightningOptions(Options):
    slope_scale: float = 1.0  # TNL layer l of L: 1 - l/(L-1) + 1e-5; 0 removes the decay
    gate_low_rank_dim: int | None = None  # None: head_dim, as in the TNL layer
    norm: str = "layernorm"
    use_short_conv: bool = False  # not in the paper
    conv_size: int = 4


def alibi_slopes(num_heads: int) -> list[float]:
    """ALiBi slopes: a geometric series from 2^(-8/n) for n = 2^a heads; otherwise those of the
    nearest smaller power of two, then every other slope of twice as many heads."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_two(num_heads)
    low = 2 ** math.floor(math.log2(num_heads))
    return power_of_two(low) + alibi_slopes(2 * low)[0::2][: num_heads - low]


class Lightning(Mixer, nnx.Module):
    """Lightning Attention-2 in the TransNormerLLM layer (Qin, Sun, Li, Shen, Sun & Zhong, 2024,
    arXiv:2401.04658; TNL: ICML 2024, arXiv:2405.17381).

    Engine L (`linmix.ops.gla`) with a fixed scalar decay per head, lambda_h = exp(-s_h) from
    the ALiBi slopes s_h, scale 1, no denominator, chunked form (Lightning-2's tiling). q, k, v
    = SiLU(x W); output is a norm over the concatenated heads times the sigmoid of a low-rank
    gate, then W_o. Causal: decodes from a fixed-size cache (the state [B, H, K, V] and the
    short-conv tails).

    Options (defaults of the released TNL layer; num_heads: `Mixer`):
        slope_scale (1.0): factor on the slopes; TNL uses 1 - l/(L-1) + 1e-5 at layer l of L,
            0 removes the decay.
        gate_low_rank_dim (None): rank of the output gate; None: the head dim.
        norm ("layernorm"): the output norm, "layernorm" or "srmsnorm" (SimpleRMSNorm).
        use_short_conv (False), conv_size (4): causal depthwise conv, then SiLU, on q, k and v
            in place of the plain SiLU (not in the paper).
    """

    name = "lightning"
    Options = LightningOptions

    @classmethod
    def check(cls, cfg, opts: LightningOptions) -> None:
        super().check(cfg, opts)
        if opts.slope_scale < 0:
            raise ValueError(f"mixer 'lightning': slope_scale must be >= 0, got {opts.slope_scale}")
        if opts.gate_low_rank_dim is not None and opts.gate_low_rank_dim < 1:
            raise ValueError(
                f"mixer 'lightning': gate_low_rank_dim must be >= 1, got {opts.gate_low_rank_dim}"
            )
        if opts.norm not in NORMS:
            raise ValueError(f"mixer 'lightning': norm {opts.norm!r} not in {NORMS}")

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.options_from(cfg)
        dtype = self.compute_dtype(cfg)
        self.num_heads = h = o.num_heads or cfg.num_heads
        d = cfg.d_model
        self.head_dim = d // h
        self.qkv = QKV(
            d, d, d, h, short_conv=o.use_short_conv, conv_size=o.conv_size, rngs=rngs, dtype=dtype
        )
        # With a short conv, QKV already applies SiLU after it: that is the layer's activation.
        self.silu_qkv = not o.use_short_conv
        rank = o.gate_low_rank_dim or self.head_dim
        self.gate_down = dense(d, rank, rngs=rngs, dtype=dtype)
        self.gate_up = dense(rank, d, rngs=rngs, dtype=dtype)
        self.norm = nnx.LayerNorm(d, dtype=dtype, rngs=rngs) if o.norm == "layernorm" else None
        self.out = dense(d, d, rngs=rngs, dtype=dtype)
        self.slope_scale = o.slope_scale
        self.chunk_size = cfg.chunk_size

    def log_decay(self) -> jax.Array:
        """log λ_h = -s_h * slope_scale, [H] fp32."""
        return -self.slope_scale * jnp.asarray(alibi_slopes(self.num_heads), jnp.float32)

    def init_cache(self, batch: int, max_len: int) -> dict:
        """State [B, H, K, V] fp32, short-conv tails, and the position of the next token."""
        h, k = self.num_heads, self.head_dim
        return {
            "state": jnp.zeros((batch, h, k, k), jnp.float32),
            "conv": self.qkv.init_cache(batch),
            "pos": jnp.zeros((), jnp.int32),
        }

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        qkv, conv = self.qkv(x_BTD, segment_ids, cache and cache["conv"])
        q_BTHK, k_BTHK, v_BTHV = (jax.nn.silu(y) for y in qkv) if self.silu_qkv else qkv
        b, t, h, _ = q_BTHK.shape
        g_BTH = jnp.broadcast_to(self.log_decay(), (b, t, h))
        o_BTHV, state = run_gla(
            q_BTHK,
            k_BTHK,
            v_BTHV,
            g_BTH,
            state=cache and cache["state"],
            scale=1.0,
            segment_ids=segment_ids,
            chunk_size=self.chunk_size,
        )
        y_BTD = o_BTHV.reshape(b, t, -1)
        y_BTD = simple_rms_norm(y_BTD, 1e-8) if self.norm is None else self.norm(y_BTD)
        y_BTD = y_BTD * jax.nn.sigmoid(self.gate_up(self.gate_down(x_BTD)))
        return self.out(y_BTD), advance(cache, t, state=state, conv=conv)
