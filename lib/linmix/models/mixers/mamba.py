"""Mamba (Gu & Dao 2023), the S6 selective state-space layer. Selective scan (per-element decay:
one decay per channel and state element), chunked form.

Per inner channel d and state element n: h_t[d, n] = exp(Δ_t[d] A[d, n]) h_{t-1}[d, n]
+ Δ_t[d] B_t[n] x_t[d], y_t[d] = C_t h_t[d] + D_d x_t[d]. x and the gate z come from one
projection; x goes through a causal depthwise conv + SiLU; Δ = softplus(low-rank(x) + dt_bias),
B_t and C_t are projections of x; A = -exp(A_log) starts at S4D-real A[d, n] = -(n + 1); the
output is y * SiLU(z), projected back. Defaults follow fla's `layers/mamba.py`
(docs/mixers.md#mamba).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import ShortConv, dense
from linmix.models.mixers import inits
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.common import advance
from linmix.models.mixers.recurrent import run_ssm


@dataclasses.dataclass(frozen=True)
class MambaOptions(Options):
    expand: float = 2.0  # inner width = expand * d_model (num_heads is not used)
    state_size: int = 16  # M per channel
    dt_rank: int = 0  # rank of the Δ projection; 0: ceil(d_model / 16)
    use_short_conv: bool = True
    conv_size: int = 4
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4


class Mamba(Mixer, nnx.Module):
    """Mamba, the S6 selective state-space layer (Gu & Dao, 2023, COLM 2024, arXiv:2312.00752).

    Selective scan (`linmix.ops.ssm.selective_scan`): a decay per channel and state element,
    exp(Delta_t[d] A[d, m]), chunked form. x and the gate z come from one projection; x passes a
    causal depthwise conv and SiLU; Delta = softplus(low-rank(x) + dt_bias); B_t, C_t are
    projections of x; A = -exp(A_log) starts at the S4D-real values -(m + 1); the output is
    (y + D x) * SiLU(z), projected back. Causal: decodes from a fixed-size cache (the state
    [B, inner, M] and the conv tail).

    Options (defaults of the paper and fla's `layers/mamba.py`; num_heads is not used):
        expand (2.0): inner width, times d_model.
        state_size (16): M, state elements per inner channel.
        dt_rank (0): rank of the Delta projection; 0 means ceil(d_model / 16).
        use_short_conv (True), conv_size (4): the causal depthwise conv on x (SiLU follows
            either way).
        dt_min (1e-3), dt_max (0.1), dt_init_floor (1e-4): softplus(dt_bias) starts log-uniform
            in [dt_min, dt_max], clipped below at dt_init_floor.
    """

    name = "mamba"
    Options = MambaOptions

    @classmethod
    def check(cls, cfg, opts: MambaOptions) -> None:
        if int(cfg.d_model * opts.expand) < 1 or opts.state_size < 1 or opts.dt_rank < 0:
            raise ValueError(
                f"mixer 'mamba': need d_model*expand >= 1, state_size >= 1, dt_rank >= 0; got "
                f"expand={opts.expand}, state_size={opts.state_size}, dt_rank={opts.dt_rank}"
            )

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.options_from(cfg)
        dtype = self.compute_dtype(cfg)
        self.inner = inner = int(cfg.d_model * o.expand)
        self.state_size = n = o.state_size
        self.dt_rank = r = o.dt_rank or math.ceil(cfg.d_model / 16)
        self.in_proj = dense(cfg.d_model, 2 * inner, rngs=rngs, dtype=dtype)
        conv = ShortConv(inner, o.conv_size, rngs=rngs, dtype=dtype)
        self.conv = conv if o.use_short_conv else None
        self.x_proj = dense(inner, r + 2 * n, rngs=rngs, dtype=dtype)
        self.dt_proj = dense(r, inner, rngs=rngs, dtype=dtype)
        self.dt_bias = nnx.Param(
            inits.dt_bias(rngs.params(), inner, o.dt_min, o.dt_max, o.dt_init_floor)
        )
        a_init = jnp.broadcast_to(jnp.arange(1, n + 1, dtype=jnp.float32), (inner, n))
        self.A_log = nnx.Param(jnp.log(a_init))
        self.D = nnx.Param(jnp.ones((inner,), jnp.float32))
        self.out_proj = dense(inner, cfg.d_model, rngs=rngs, dtype=dtype)
        self.chunk_size = cfg.chunk_size

    def init_cache(self, batch: int, max_len: int) -> dict:
        """State [B, D, M] fp32 (D the inner channels), the conv tail, and the next position."""
        return {
            "state": jnp.zeros((batch, self.inner, self.state_size), jnp.float32),
            "conv": None if self.conv is None else self.conv.init_cache(batch),
            "pos": jnp.zeros((), jnp.int32),
        }

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        u_BTD, z_BTD = jnp.split(self.in_proj(x_BTD), 2, axis=-1)
        conv = None
        if self.conv is not None and cache is not None:
            u_BTD, conv = self.conv.extend(u_BTD, cache["conv"])
        elif self.conv is not None:
            u_BTD = self.conv(u_BTD, segment_ids)
        u_BTD = jax.nn.silu(u_BTD)
        dt_BTY, B_BTM, C_BTM = jnp.split(
            self.x_proj(u_BTD), [self.dt_rank, self.dt_rank + self.state_size], axis=-1
        )
        y_BTD, state = run_ssm(
            u_BTD,
            self.dt_proj(dt_BTY),
            -jnp.exp(self.A_log[...]),
            B_BTM,
            C_BTM,
            self.D[...],
            z_BTD,
            dt_bias=self.dt_bias[...],
            dt_softplus=True,
            state=cache and cache["state"],
            segment_ids=segment_ids,
            chunk_size=self.chunk_size,
        )
        return self.out_proj(y_BTD), advance(cache, x_BTD.shape[1], state=state, conv=conv)
