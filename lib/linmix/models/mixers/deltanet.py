"""DeltaNet (Yang et al. 2024), linear attention with the delta rule. Engine Δ, chunked (WY/UT).

S_t = (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t, o_t = q_t S_t / sqrt(K): each token
overwrites the value stored under its key instead of adding to it. q, k, v pass through a causal
short conv + SiLU; q and k are L2-normalised per head inside the op (so the transition is a
contraction); beta_t = sigmoid(x W_beta) per head; output per-head RMSNorm (gate optional).
Defaults follow fla's `layers/delta_net.py` (docs/mixers.md#deltanet).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense
from linmix.models.mixers.common import LinearMixer, LinearOptions, advance
from linmix.models.mixers.recurrent import run_delta


@dataclasses.dataclass(frozen=True)
class DeltaNetOptions(LinearOptions):
    expand_k: float = 1.0
    expand_v: float = 1.0
    use_short_conv: bool = True
    use_output_gate: bool = False
    allow_neg_eigval: bool = False  # beta in (0, 2): transitions may flip sign


class DeltaNet(LinearMixer, nnx.Module):
    """DeltaNet, linear attention with the delta rule (Yang, Wang, Zhang, Shen & Kim, NeurIPS 2024,
    arXiv:2406.06484).

    Engine Δ (`linmix.ops.delta`), no decay, chunked (WY/UT) form: S_t = (I - beta_t k_t^T k_t)
    S_{t-1} + beta_t k_t^T v_t, so a write replaces the value stored under its key. q, k, v pass
    a short conv and SiLU; q and k are L2-normalised per head; beta_t = sigmoid(x W_beta) per
    head; scale K^-1/2; output is a per-head RMSNorm, then W_o. Causal: decodes from a
    fixed-size cache (the state [B, H, K, V] and the short-conv tails).

    Options (defaults of the paper and fla's `layers/delta_net.py`; num_heads: `Mixer`):
        expand_k (1.0), expand_v (1.0): total key / value width over all heads, times d_model.
        use_short_conv (True), conv_size (4): causal depthwise conv of conv_size taps on q, k
            and v (SiLU follows either way).
        use_output_gate (False): multiply the normed output by SiLU(x W_g) before W_o.
        allow_neg_eigval (False): beta in (0, 2) instead of (0, 1), so the transition may have
            negative eigenvalues.
    """

    name = "deltanet"
    Options = DeltaNetOptions

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.build(cfg, rngs)
        self.options = o
        self.beta_proj = dense(
            cfg.d_model, self.num_heads, rngs=rngs, dtype=self.compute_dtype(cfg)
        )
        self.beta_max = 2.0 if o.allow_neg_eigval else 1.0

    def log_decay(self, x_BTD: jax.Array) -> jax.Array | None:
        """No decay: plain DeltaNet. Gated DeltaNet overrides this."""
        return None

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        (q_BTHK, k_BTHK, v_BTHV), conv = self.qkv(x_BTD, segment_ids, cache and cache["conv"])
        if not self.options.use_short_conv:  # the conv path already applied SiLU
            q_BTHK, k_BTHK, v_BTHV = (jax.nn.silu(y) for y in (q_BTHK, k_BTHK, v_BTHV))
        beta_BTH = self.beta_max * jax.nn.sigmoid(self.beta_proj(x_BTD).astype(jnp.float32))
        o_BTHV, state = run_delta(
            q_BTHK,
            k_BTHK,
            v_BTHV,
            beta_BTH,
            self.log_decay(x_BTD),
            state=cache and cache["state"],
            use_qk_l2norm=True,
            segment_ids=segment_ids,
            chunk_size=self.chunk_size,
        )
        return self.output(o_BTHV, x_BTD), advance(cache, x_BTD.shape[1], state=state, conv=conv)
