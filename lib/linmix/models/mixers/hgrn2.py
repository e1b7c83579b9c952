"""HGRN2 (Qin et al. 2024, "HGRN2: Gated Linear RNNs with State Expansion"). Engine L,
per-channel decay, chunked form: GLA with the key tied to the forget gate.

S_t = diag(f_t) S_{t-1} + (1 - f_t)^T i_t and o_t = swish(q_t) S_t / sqrt(K) per head, with the
forget gate bounded below, f_t = γ + (1 - γ) σ(x W_f) (computed in log space), key dim K =
`expand_ratio` per head and value dim D / H. The output is RMSNorm over the concatenated heads,
then W_o (no output gate). fla's `layers/hgrn2.py` (docs/mixers.md#hgrn2).

The lower bound: fla derives every layer's γ_l from one model-level P [L, D] (cumsum of its
softmax over depth, so γ_0 = 0 and γ grows with depth). A mixer here sees only its own layer, so
each layer learns its own γ = σ(p) per key channel, starting at `lower_bound_init`
(`use_lower_bound=False`: no bound, fla's first layer).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import ShortConv, dense, rms_norm
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.common import advance
from linmix.models.mixers.recurrent import run_gla

_F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class HGRN2Options(Options):
    expand_ratio: int = 128  # state expansion: key (forget) dim per head
    use_lower_bound: bool = True
    lower_bound_init: float = 0.5  # γ at init; fla's P = 0 gives γ_l = l / L, 0.5 on average
    use_short_conv: bool = False
    conv_size: int = 4
    norm_eps: float = 1e-5  # fla `norm_eps`


class HGRN2(Mixer, nnx.Module):
    """HGRN2, gated linear RNN with state expansion (Qin, Yang, Sun, Shen, Li, Sun & Zhong,
    COLM 2024, arXiv:2404.07904).

    Engine L (`linmix.ops.gla`) with a data-dependent decay per key channel, chunked form: GLA
    whose key is tied to its forget gate, S_t = diag(f_t) S_{t-1} + (1 - f_t)^T i_t, o_t =
    swish(q_t) S_t / sqrt(K), with f = gamma + (1 - gamma) sigmoid(x W_f) in log space. Output
    is an RMSNorm over the concatenated heads, then W_o (no output gate). Causal: decodes from a
    fixed-size cache (the state and the short-conv tails).

    Options (defaults of the paper and fla's `layers/hgrn2.py`; num_heads: `Mixer`):
        expand_ratio (128): key (forget-gate) width per head, the state expansion; the value
            width per head is d_model / num_heads.
        use_lower_bound (True): bound the forget gate below by gamma, learned per key channel
            in each layer (fla derives it from the model depth, which a mixer does not see).
        lower_bound_init (0.5): gamma at initialisation, in (0, 1).
        use_short_conv (False), conv_size (4): causal depthwise convs, with no activation, on
            q, f and i.
        norm_eps (1e-5): eps of the output RMSNorm.
    """

    name = "hgrn2"
    Options = HGRN2Options

    @classmethod
    def check(cls, cfg, opts: HGRN2Options) -> None:
        super().check(cfg, opts)
        if opts.expand_ratio < 1:
            raise ValueError(f"mixer 'hgrn2': expand_ratio must be >= 1, got {opts.expand_ratio}")
        if not 0 < opts.lower_bound_init < 1:
            raise ValueError(
                f"mixer 'hgrn2': lower_bound_init must be in (0, 1), got {opts.lower_bound_init}"
            )

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.options_from(cfg)
        dtype = self.compute_dtype(cfg)
        self.num_heads = h = o.num_heads or cfg.num_heads
        d, self.key_dim = cfg.d_model, h * o.expand_ratio
        self.q = dense(d, self.key_dim, rngs=rngs, dtype=dtype)
        self.f = dense(d, self.key_dim, rngs=rngs, dtype=dtype)
        self.i = dense(d, d, rngs=rngs, dtype=dtype)
        # fla's short convs have no activation: f must stay the raw forget logit.
        widths = (self.key_dim, self.key_dim, d)
        convs = [ShortConv(n, o.conv_size, rngs=rngs, dtype=dtype) for n in widths]
        self.convs = nnx.List(convs) if o.use_short_conv else None
        if o.use_lower_bound:
            logit = math.log(o.lower_bound_init / (1 - o.lower_bound_init))
            self.lower_bound = nnx.Param(jnp.full((self.key_dim,), logit, _F32))
        else:
            self.lower_bound = None
        self.norm = rms_norm(d, rngs=rngs, dtype=dtype, eps=o.norm_eps)
        self.out = dense(d, d, rngs=rngs, dtype=dtype)
        self.head_v = d // h
        self.chunk_size = cfg.chunk_size

    def init_cache(self, batch: int, max_len: int) -> dict:
        """State [B, H, K, V] fp32, short-conv tails, and the position of the next token."""
        h = self.num_heads
        conv = None if self.convs is None else [c.init_cache(batch) for c in self.convs]
        return {
            "state": jnp.zeros((batch, h, self.key_dim // h, self.head_v), _F32),
            "conv": conv,
            "pos": jnp.zeros((), jnp.int32),
        }

    def log_forget(self, f_BTF: jax.Array) -> jax.Array:
        """log f = logaddexp(log γ, log(1 - γ) + log σ(f̃)) in fp32: f in [γ, 1), never 1."""
        logsig_BTD = jax.nn.log_sigmoid(f_BTF.astype(_F32))
        if self.lower_bound is None:
            return logsig_BTD
        p_11D = self.lower_bound[...][None, None]
        return jnp.logaddexp(jax.nn.log_sigmoid(p_11D), jax.nn.log_sigmoid(-p_11D) + logsig_BTD)

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        b, t, _ = x_BTD.shape
        qfi = [self.q(x_BTD), self.f(x_BTD), self.i(x_BTD)]
        conv = None
        if self.convs is not None and cache is None:
            qfi = [c(y, segment_ids) for c, y in zip(self.convs, qfi, strict=True)]
        elif self.convs is not None:
            pairs = [c.extend(y, w) for c, y, w in zip(self.convs, qfi, cache["conv"], strict=True)]
            qfi, conv = [p[0] for p in pairs], [p[1] for p in pairs]
        q_BTD, f_BTD, i_BTD = qfi
        g_BTD = self.log_forget(f_BTD)
        k_BTD = -jnp.expm1(g_BTD)  # the input gate is tied: k = 1 - f
        h = self.num_heads
        q_BTHK, k_BTHK, g_BTHK = (
            y.reshape(b, t, h, -1) for y in (jax.nn.silu(q_BTD), k_BTD.astype(q_BTD.dtype), g_BTD)
        )
        o_BTHV, state = run_gla(
            q_BTHK,
            k_BTHK,
            i_BTD.reshape(b, t, h, -1),
            g_BTHK,
            state=cache and cache["state"],
            segment_ids=segment_ids,
            chunk_size=self.chunk_size,
        )
        y_BTD = self.out(self.norm(o_BTHV.reshape(b, t, -1)))
        return y_BTD, advance(cache, t, state=state, conv=conv)
