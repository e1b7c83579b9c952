"""Mamba2 (Dao & Gu 2024), state-space duality. Engine L, data-dependent scalar decay,
chunked form.

Per head h with head dim V and state size M: S_t = exp(Δ_t A_h) S_{t-1} + B_t^T (Δ_t x_t),
y_t = C_t S_t + D_h x_t, i.e. gla with q = C, k = B, v = Δ x, log-decay Δ A_h and scale 1.
One projection gives [z, x, B, C, Δ]; a causal depthwise conv + SiLU runs over (x, B, C); the
output is RMSNorm(y * SiLU(z)) (norm after the gate) and a projection back. B and C are shared by
the heads of a group. Defaults follow fla's `layers/mamba2.py` (docs/mixers.md#mamba2).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import ShortConv, dense, rms_norm
from linmix.models.mixers import inits
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.common import advance
from linmix.models.mixers.recurrent import run_gla


@dataclasses.dataclass(frozen=True)
class Mamba2Options(Options):
    expand: float = 2.0  # inner width = expand * d_model
    head_dim: int = 64  # V; heads = inner width / V (num_heads is not used)
    state_size: int = 128  # M
    n_groups: int = 1  # G groups of B, C, shared by inner/(V * n_groups) heads each
    use_short_conv: bool = True
    conv_size: int = 4
    a_init_range: tuple[float, float] = (1.0, 16.0)
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4


class Mamba2(Mixer, nnx.Module):
    """Mamba2, state-space duality (Dao & Gu, ICML 2024, arXiv:2405.21060).

    Engine L (`linmix.ops.gla`) with a data-dependent scalar decay per head, chunked form: q = C_t,
    k = B_t, v = Delta_t x_t, log-decay Delta_t A_h with Delta = softplus(x W + dt_bias) and
    A_h = -exp(A_log_h), scale 1. One projection gives [z, x, B, C, Delta]; a causal depthwise
    conv and SiLU act on (x, B, C); the skip D_h x is added, then RMSNorm(y * SiLU(z)) and the
    output projection. Causal: decodes from a fixed-size cache (the state [B, H, M, V] and the
    conv tail).

    Options (defaults of the paper and fla's `layers/mamba2.py`; num_heads is not used):
        expand (2.0): inner width, times d_model.
        head_dim (64): V per head; heads = inner width / head_dim.
        state_size (128): M, the key width of the state.
        n_groups (1): groups of (B, C), each shared by the heads of its group.
        use_short_conv (True), conv_size (4): the causal depthwise conv on (x, B, C).
        a_init_range ((1.0, 16.0)): A_h = exp(A_log_h) starts uniform in this range.
        dt_min (1e-3), dt_max (0.1), dt_init_floor (1e-4): softplus(dt_bias) starts log-uniform
            in [dt_min, dt_max], clipped below at dt_init_floor.
    """

    name = "mamba2"
    Options = Mamba2Options

    @classmethod
    def check(cls, cfg, opts: Mamba2Options) -> None:
        inner = int(cfg.d_model * opts.expand)
        if opts.head_dim < 1 or inner < opts.head_dim or inner % opts.head_dim:
            raise ValueError(
                f"mixer 'mamba2': inner width d_model*expand = {inner} is not a multiple of "
                f"head_dim={opts.head_dim}"
            )
        heads = inner // opts.head_dim
        if opts.n_groups < 1 or heads % opts.n_groups:
            raise ValueError(
                f"mixer 'mamba2': {heads} heads are not divisible into n_groups={opts.n_groups}"
            )
        low, high = opts.a_init_range
        if not 0 < low <= high:
            raise ValueError(
                f"mixer 'mamba2': a_init_range must be 0 < low <= high, got {low, high}"
            )

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.options_from(cfg)
        dtype = self.compute_dtype(cfg)
        self.inner = inner = int(cfg.d_model * o.expand)
        self.heads = heads = inner // o.head_dim
        self.groups, self.state_size = o.n_groups, o.state_size
        conv_width = inner + 2 * o.n_groups * o.state_size  # x, B, C go through the conv
        self.in_proj = dense(cfg.d_model, inner + conv_width + heads, rngs=rngs, dtype=dtype)
        self.conv = ShortConv(conv_width, o.conv_size, rngs=rngs, dtype=dtype)
        self.conv = self.conv if o.use_short_conv else None
        self.dt_bias = nnx.Param(
            inits.dt_bias(rngs.params(), heads, o.dt_min, o.dt_max, o.dt_init_floor)
        )
        self.A_log = nnx.Param(inits.uniform_log_a(rngs.params(), heads, *o.a_init_range))
        self.D = nnx.Param(jnp.ones((heads,), jnp.float32))
        self.norm = rms_norm(inner, rngs=rngs, dtype=dtype)
        self.out_proj = dense(inner, cfg.d_model, rngs=rngs, dtype=dtype)
        self.chunk_size = cfg.chunk_size

    def init_cache(self, batch: int, max_len: int) -> dict:
        """State [B, H, M, V] fp32, the conv tail, and the next position."""
        p = self.inner // self.heads
        return {
            "state": jnp.zeros((batch, self.heads, self.state_size, p), jnp.float32),
            "conv": None if self.conv is None else self.conv.init_cache(batch),
            "pos": jnp.zeros((), jnp.int32),
        }

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        b, t, _ = x_BTD.shape
        h, n, gr = self.heads, self.state_size, self.groups
        z_BTD, xbc_BTD, dt_BTH = jnp.split(
            self.in_proj(x_BTD), [self.inner, 2 * self.inner + 2 * gr * n], axis=-1
        )
        conv = None
        if self.conv is not None and cache is not None:
            xbc_BTD, conv = self.conv.extend(xbc_BTD, cache["conv"])
        elif self.conv is not None:
            xbc_BTD = self.conv(xbc_BTD, segment_ids)
        xbc_BTD = jax.nn.silu(xbc_BTD)
        u_BTD, B_BTD, C_BTD = jnp.split(xbc_BTD, [self.inner, self.inner + gr * n], axis=-1)
        u_BTHV = u_BTD.reshape(b, t, h, -1)
        # Heads of a group read the same B (keys) and C (queries).
        B_BTHM = jnp.repeat(B_BTD.reshape(b, t, gr, n), h // gr, axis=2)
        C_BTHM = jnp.repeat(C_BTD.reshape(b, t, gr, n), h // gr, axis=2)
        delta_BTH = jax.nn.softplus(dt_BTH.astype(jnp.float32) + self.dt_bias[...][None, None])
        g_BTH = -jnp.exp(self.A_log[...])[None, None] * delta_BTH
        v_BTHV = u_BTHV * delta_BTH[..., None].astype(u_BTHV.dtype)
        y_BTHV, state = run_gla(
            C_BTHM,
            B_BTHM,
            v_BTHV,
            g_BTH,
            scale=1.0,
            state=cache and cache["state"],
            segment_ids=segment_ids,
            chunk_size=self.chunk_size,
        )
        y_BTHV = y_BTHV + u_BTHV * self.D[...][None, None, :, None].astype(u_BTHV.dtype)
        y_BTD = y_BTHV.reshape(b, t, self.inner) * jax.nn.silu(z_BTD)
        y_BTD = self.out_proj(self.norm(y_BTD))
        return y_BTD, advance(cache, t, state=state, conv=conv)
