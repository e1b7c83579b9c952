"""Gated DeltaNet (Yang, Kautz & Hatamizadeh 2025). Engine Δ with a scalar gate, chunked (WY/UT).

S_t = a_t (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t: DeltaNet whose memory also decays,
with log a_t = -exp(A_log_h) softplus(x W_a + dt_bias_h) per head (Mamba2's gate), A ~ U(0, 16)
and softplus(dt_bias) ~ LogUniform[1e-3, 0.1]. Output RMSNorm(o) * SiLU(x W_g). Value heads are
twice the key heads as in fla's `layers/gated_deltanet.py` (docs/mixers.md#gated_deltanet).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense
from linmix.models.mixers import inits
from linmix.models.mixers.deltanet import DeltaNet, DeltaNetOptions


@dataclasses.dataclass(frozen=True)
class GatedDeltaNetOptions(DeltaNetOptions):
    expand_k: float = 0.75  # fla: 6 heads x 256 = 0.75 * 2048
    expand_v: float = 1.5  # expand_v = 2 relative to the keys
    use_output_gate: bool = True
    a_init_range: tuple[float, float] = (0.0, 16.0)
    dt_min: float = 1e-3
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4


class GatedDeltaNet(DeltaNet):
    """Gated DeltaNet (Yang, Kautz & Hatamizadeh, ICLR 2025, arXiv:2412.06464).

    Engine Δ (`linmix.ops.delta`) with a data-dependent scalar decay per head, chunked (WY/UT)
    form: S_t = a_t (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t with Mamba2's gate
    log a_t = -exp(A_log_h) softplus(x W_a + dt_bias_h). Otherwise DeltaNet's layer; output is a
    per-head RMSNorm times SiLU(x W_g), then W_o. Causal: decodes from a fixed-size cache (the
    state [B, H, K, V] and the short-conv tails).

    Options (defaults of the paper and fla's `layers/gated_deltanet.py`; num_heads: `Mixer`):
        expand_k (0.75), expand_v (1.5): total key / value width, times d_model (value heads
            twice as wide as key heads).
        use_short_conv (True), conv_size (4), allow_neg_eigval (False): as in `DeltaNet`.
        use_output_gate (True): the SiLU(x W_g) output gate; False leaves the RMSNorm alone.
        a_init_range ((0.0, 16.0)): A_h = exp(A_log_h) starts uniform in this range (the low
            end is raised to 1e-4 so that every head decays).
        dt_min (1e-3), dt_max (0.1), dt_init_floor (1e-4): softplus(dt_bias) starts log-uniform
            in [dt_min, dt_max], clipped below at dt_init_floor.
    """

    name = "gated_deltanet"
    Options = GatedDeltaNetOptions

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        super().__init__(cfg, rngs=rngs)
        o, h = self.options, self.num_heads
        self.a_proj = dense(cfg.d_model, h, rngs=rngs, dtype=self.compute_dtype(cfg))
        self.dt_bias = nnx.Param(
            inits.dt_bias(rngs.params(), h, o.dt_min, o.dt_max, o.dt_init_floor)
        )
        # A = 0 would mean no decay at all; keep the sample strictly positive.
        low, high = o.a_init_range
        self.A_log = nnx.Param(inits.uniform_log_a(rngs.params(), h, max(low, 1e-4), high))

    def log_decay(self, x_BTD: jax.Array) -> jax.Array:
        a_BTH = self.a_proj(x_BTD).astype(jnp.float32) + self.dt_bias[...][None, None]
        return -jnp.exp(self.A_log[...])[None, None] * jax.nn.softplus(a_BTH)
