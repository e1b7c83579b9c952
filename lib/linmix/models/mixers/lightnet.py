"""LightNet (Qin et al. 2024, "You Only Scan Once"). Engine L, per-channel decay from a
running log-sum-exp, chunked form.

Additive recurrence: per key channel i the normaliser z_t = log sum_{s<=t} exp(k_{s,i}) (fp32,
restarted at each document), the key exp(k_t - z_t) and the log-decay z_{t-1} - z_t <= 0, so

    S_t[i] = sum_{s<=t} e^{k_{s,i}} v_s / sum_{s<=t} e^{k_{s,i}}      (a softmax over time),

o_t = SiLU(q_t) S_t with scale 1, then RMSNorm over all heads * swish(x W_g1 W_g2) and W_o. The
decode cache holds S and z. Defaults follow fla's `layers/lightnet.py`
(docs/mixers.md#lightnet): z starts at -inf (no extra "sink" term, unlike xmixers'
lse_state = 0), keys are raw logits (no activation), only q gets SiLU, and the optional short
convs have no activation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import ShortConv, dense, rms_norm
from linmix.models.mixers.base import Mixer
from linmix.models.mixers.common import LinearOptions, advance
from linmix.models.mixers.recurrent import run_gla

_F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class LightNetOptions(LinearOptions):
    # fla: key dim = num_heads * expand_ratio = d_model, value dim = d_model.
    expand_k: float = 1.0
    expand_v: float = 1.0
    gate_low_rank_dim: int = 128  # fla `gate_low_rank_dim`: g = x W_g1 (D -> 128) W_g2 (128 -> D)
    use_output_gate: bool = True
    use_short_conv: bool = False
    conv_size: int = 4


def running_logsumexp(
    k_BTHK: jax.Array, start_BT: jax.Array | None, z0_BHK: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """(z, z_prev) in fp32: z_t = log(exp(z_{t-1}) + exp(k_t)) from z_0 = z0 (None: -inf), with
    z_{t-1} = -inf where `start` marks a document start; z_prev[t] = z_{t-1} after that reset."""
    k = k_BTHK.astype(_F32)
    if start_BT is None:
        z = jax.lax.cumlogsumexp(k, axis=1)
    else:

        def combine(a, c):
            # Segmented prefix log-sum-exp: a later restart discards everything before it.
            (ra, za), (rc, zc) = a, c
            return ra | rc, jnp.where(rc, zc, jnp.logaddexp(za, zc))

        flags = jnp.broadcast_to(start_BT[:, :, None, None], k.shape)
        _, z = jax.lax.associative_scan(combine, (flags, k), axis=1)
    if z0_BHK is not None:  # a cache holds one document: no restarts inside
        z = jnp.logaddexp(z0_BHK.astype(_F32)[:, None], z)
    first = jnp.full_like(k[:, :1], -jnp.inf) if z0_BHK is None else z0_BHK[:, None]
    z_prev = jnp.concatenate([first.astype(_F32), z[:, :-1]], axis=1)
    if start_BT is not None:
        z_prev = jnp.where(start_BT[:, :, None, None], -jnp.inf, z_prev)
    return z, z_prev


class LightNet(Mixer, nnx.Module):
    """LightNet (Qin, Mao, Shen, Li, Zhang, Dai & Zhong, "You Only Scan Once", 2024,
    arXiv:2405.21022).

    Engine L (`linmix.ops.gla`) with a per-key-channel decay from a running log-sum-exp, chunked
    form: with z_t = log sum_{s<=t} exp(k_s) the key is exp(k_t - z_t) and the log-decay
    z_{t-1} - z_t, so each state row is a softmax over time of the values. q = SiLU(x W_q),
    scale 1; output is an RMSNorm over all heads times swish of a low-rank gate, then W_o.
    Causal: decodes from a fixed-size cache (the state, z and the short-conv tails).

    Options (defaults of the paper and fla's `layers/lightnet.py`; num_heads: `Mixer`):
        expand_k (1.0), expand_v (1.0): total key / value width over all heads, times d_model.
        gate_low_rank_dim (128): rank of the output gate.
        use_output_gate (True): the low-rank swish output gate; False leaves the RMSNorm alone.
        use_short_conv (False), conv_size (4): causal depthwise convs, with no activation, on
            q, k and v.
    """

    name = "lightnet"
    Options = LightNetOptions

    @classmethod
    def check(cls, cfg, opts: LightNetOptions) -> None:
        super().check(cfg, opts)
        if opts.gate_low_rank_dim < 1 or opts.conv_size < 1:
            raise ValueError(
                f"mixer 'lightnet': gate_low_rank_dim and conv_size must be >= 1, got "
                f"{opts.gate_low_rank_dim} and {opts.conv_size}"
            )

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.options_from(cfg)
        dtype = self.compute_dtype(cfg)
        self.num_heads = h = o.num_heads or cfg.num_heads
        self.key_dim = int(cfg.d_model * o.expand_k)
        self.value_dim = int(cfg.d_model * o.expand_v)
        widths = (self.key_dim, self.key_dim, self.value_dim)
        self.q, self.k, self.v = (dense(cfg.d_model, n, rngs=rngs, dtype=dtype) for n in widths)
        convs = [ShortConv(n, o.conv_size, rngs=rngs, dtype=dtype) for n in widths]
        self.convs = nnx.List(convs) if o.use_short_conv else None
        self.norm = rms_norm(self.value_dim, rngs=rngs, dtype=dtype)  # over all heads, as fla
        gate = o.use_output_gate
        r = o.gate_low_rank_dim
        self.gate_down = dense(cfg.d_model, r, rngs=rngs, dtype=dtype) if gate else None
        self.gate_up = dense(r, self.value_dim, rngs=rngs, dtype=dtype) if gate else None
        self.out = dense(self.value_dim, cfg.d_model, rngs=rngs, dtype=dtype)
        self.chunk_size = cfg.chunk_size
        self.head_k, self.head_v = self.key_dim // h, self.value_dim // h

    def init_cache(self, batch: int, max_len: int) -> dict:
        """State [B, H, K, V] fp32, log-normaliser z [B, H, K] (-inf: no key yet), conv tails."""
        h = self.num_heads
        conv = None if self.convs is None else [c.init_cache(batch) for c in self.convs]
        return {
            "state": jnp.zeros((batch, h, self.head_k, self.head_v), _F32),
            "z": jnp.full((batch, h, self.head_k), -jnp.inf, _F32),
            "conv": conv,
            "pos": jnp.zeros((), jnp.int32),
        }

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        b, t, _ = x_BTD.shape
        qkv = [self.q(x_BTD), self.k(x_BTD), self.v(x_BTD)]
        conv = None
        if self.convs is not None and cache is not None:
            pairs = [c.extend(y, w) for c, y, w in zip(self.convs, qkv, cache["conv"], strict=True)]
            qkv, conv = [p[0] for p in pairs], [p[1] for p in pairs]
        elif self.convs is not None:
            qkv = [c(y, segment_ids) for c, y in zip(self.convs, qkv, strict=True)]
        h = self.num_heads
        q_BTHK, k_BTHK, v_BTHV = (y.reshape(b, t, h, -1) for y in qkv)
        start_BT = None
        if segment_ids is not None:
            start_BT = jnp.pad(segment_ids[:, 1:] != segment_ids[:, :-1], ((0, 0), (1, 0)))
        z_BTHK, z_prev_BTHK = running_logsumexp(k_BTHK, start_BT, cache and cache["z"])
        # The first key of a document meets an empty state: its decay is irrelevant, set it to 0
        # (-inf - z would put -inf into the engine's cumulative sums).
        g_BTHK = jnp.where(jnp.isneginf(z_prev_BTHK), 0.0, z_prev_BTHK - z_BTHK)
        kn_BTHK = jnp.exp(k_BTHK.astype(_F32) - z_BTHK).astype(q_BTHK.dtype)
        o_BTHV, state = run_gla(
            jax.nn.silu(q_BTHK),
            kn_BTHK,
            v_BTHV,
            g_BTHK,
            scale=1.0,
            state=cache and cache["state"],
            segment_ids=segment_ids,
            chunk_size=self.chunk_size,
        )
        y_BTD = self.norm(o_BTHV.reshape(b, t, self.value_dim))
        if self.gate_up is not None:
            y_BTD = y_BTD * jax.nn.silu(self.gate_up(self.gate_down(x_BTD)))
        return self.out(y_BTD), advance(cache, t, state=state, conv=conv, z=z_BTHK[:, -1])
