"""JRT-RNN (Arora et al. 2024), Prefix Linear Attention. Engine L, no gate, chunked form
from a non-causal prefix state.

With Taylor features phi (Based's 2nd-order expansion of exp, feature dim 16 per head) and a
prefix of M tokens (paper Eq. 3), token i reads

    y_i = phi(q_i) (sum_{j<=i} phi(kd_j)^T vd_j + sum_{j<M} phi(ke_j)^T ve_j)
          / phi(q_i) (sum_{j<=i} phi(kd_j)   + sum_{j<M} phi(ke_j))

with separate decoder (kd, vd) and encoder (ke, ve) projections: the encoder sum is the initial
state of a causal linear attention (denominator as a ones column), and decoding continues with
the plain linear-attention step (Eq. 2). Output: W_o only, as in the official layer.

Causality. Tokens at or after position M are causal; the M prefix tokens see the whole prefix,
so the layer is causal in the usual sense only for M = 0. `prefix_len` therefore defaults to 0
(causal Taylor linear attention with the decoder projections only, which the generic
causal-mixer tests check). The paper's setting is `prefix_len=M` (1024 in the JRT-360M config) with
no next-token loss on the prefix, which would see its own targets (the paper puts an MLM loss
there); MQAR supervises only the queries after its key-value context, so any M up to the context
length 2 * num_kv_pairs * num_passes is exact there. With packed segments the prefix
is the first M tokens of each document. With a cache, the prefix is the first min(M, T) tokens of
the first call (official code: the encoder runs at the first prefill only; the paper left-pads
shorter prompts to M), so prefill >= M tokens, then decode, equals the whole-sequence output.

The JRT model interleaves these layers with BaseConv and sliding-window attention
(docs/mixers.md#jrt); here it is one mixer, and `use_short_conv` (off by default, as in the
official layer) adds the local mixing alone: a causal short conv + SiLU on q, k_d, v_d and on
k_e, v_e.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import ShortConv, dense, positions
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.common import QKV, advance
from linmix.models.mixers.recurrent import run_gla
from linmix.ops.gla import gla
from linmix.ops.gla.features import divide_by_denominator, taylor2, with_denominator

_F32 = jnp.float32
_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class JRTOptions(Options):
    feature_dim: int = 16  # per-head q / k width before the Taylor map (phi dim 1 + 16 + 256)
    expand_v: float = 1.0  # value head dim = d_model / num_heads
    prefix_len: int = 0  # M; 0 = causal (see the module docstring; the paper uses 1024)
    use_short_conv: bool = False
    conv_size: int = 4


class JRT(Mixer, nnx.Module):
    """Prefix linear attention of JRT-RNN (Arora, Timalsina, Singhal, Spector, Eyuboglu, Zhao, Rao,
    Rudra & Ré, 2024, arXiv:2407.05483).

    Engine L (`linmix.ops.gla`), no gate, with the denominator, chunked form from a prefix state:
    features are the second-order Taylor map of exp; the first M tokens form a non-causal
    encoder sum of phi(k_e)^T [v_e, 1] that starts the causal decoder pass, so every token
    reads the whole prefix; output W_o only. Causal for M = 0 (the default); with M > 0 the
    prefix tokens see each other. Decodes from a fixed-size cache (the numerator and denominator
    state and the short-conv tails).

    Options (num_heads: `Mixer`):
        feature_dim (16): per-head q / k width before the Taylor map (1 + f + f^2 features).
        expand_v (1.0): total value width over all heads, times d_model.
        prefix_len (0): M, the encoder prefix; 0 keeps the layer causal (the paper uses 1024,
            with a masked-language loss on the prefix).
        use_short_conv (False), conv_size (4): causal depthwise conv, then SiLU, on q, k_d, v_d
            (and on k_e, v_e); off in the official layer.
    """

    name = "jrt"
    Options = JRTOptions

    @classmethod
    def check(cls, cfg, opts) -> None:
        super().check(cfg, opts)
        if opts.feature_dim < 1:
            raise ValueError(f"mixer 'jrt': feature_dim must be >= 1, got {opts.feature_dim}")
        if opts.prefix_len < 0:
            raise ValueError(f"mixer 'jrt': prefix_len must be >= 0, got {opts.prefix_len}")

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.options_from(cfg)
        dtype = self.compute_dtype(cfg)
        d = cfg.d_model
        self.num_heads = h = o.num_heads or cfg.num_heads
        key_dim, value_dim = o.feature_dim * h, int(d * o.expand_v)
        self.qkv = QKV(
            d,
            key_dim,
            value_dim,
            h,
            short_conv=o.use_short_conv,
            conv_size=o.conv_size,
            rngs=rngs,
            dtype=dtype,
        )
        self.prefix_len = o.prefix_len
        # Encoder projections k_e, v_e (+ their convs) exist only with a prefix.
        widths = (key_dim, value_dim)
        enc = [dense(d, n, rngs=rngs, dtype=dtype) for n in widths]
        self.encoder = nnx.List(enc) if o.prefix_len else None
        convs = [ShortConv(n, o.conv_size, rngs=rngs, dtype=dtype) for n in widths]
        self.encoder_convs = nnx.List(convs) if o.prefix_len and o.use_short_conv else None
        self.out = dense(value_dim, d, rngs=rngs, dtype=dtype)
        self.phi_dim = 1 + o.feature_dim + o.feature_dim**2
        self.head_v = value_dim // h
        self.chunk_size = cfg.chunk_size

    def init_cache(self, batch: int, max_len: int) -> dict:
        """Numerator and denominator state [B, H, phi, V + 1] fp32, conv tails, position."""
        state = jnp.zeros((batch, self.num_heads, self.phi_dim, self.head_v + 1), _F32)
        return {"state": state, "conv": self.qkv.init_cache(batch), "pos": jnp.zeros((), jnp.int32)}

    def encode(self, x_BTD: jax.Array, in_prefix_BT: jax.Array, segment_ids=None):
        """phi(k_e) [B, T, H, phi] (zero outside the prefix) and [v_e, 1] [B, T, H, V + 1]."""
        b, t, _ = x_BTD.shape
        ke, ve = (p(x_BTD) for p in self.encoder)
        if self.encoder_convs is not None:
            # The encoder runs from the sequence start only, so its convs start from zeros.
            ke, ve = (
                jax.nn.silu(c(y, segment_ids))
                for c, y in zip(self.encoder_convs, (ke, ve), strict=True)
            )
        ke_BTHK = taylor2(ke.reshape(b, t, self.num_heads, -1))
        ke_BTHK = ke_BTHK * in_prefix_BT[:, :, None, None].astype(ke_BTHK.dtype)
        return ke_BTHK, with_denominator(ve.reshape(b, t, self.num_heads, -1))

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        b, t, _ = x_BTD.shape
        (q, k, v_BTHV), conv = self.qkv(x_BTD, segment_ids, cache and cache["conv"])
        q_BTHK, k_BTHK = taylor2(q), taylor2(k)
        state = None if cache is None else cache["state"]
        if self.prefix_len and segment_ids is not None:
            # Packed documents: each reads its own prefix; the cross term is a non-causal
            # segment-local reduction, added to the decoder's numerator and denominator.
            in_prefix_BT = positions(segment_ids, b, t) < self.prefix_len
            ke_BTHK, ve_BTHV = self.encode(x_BTD, in_prefix_BT, segment_ids)
            kw = dict(scale=1.0, segment_ids=segment_ids, chunk_size=self.chunk_size)
            dec, _ = gla(q_BTHK, k_BTHK, with_denominator(v_BTHV), None, **kw)
            cross, _ = gla(q_BTHK, ke_BTHK, ve_BTHV, None, causal=False, **kw)
            o_BTHV = divide_by_denominator(dec.astype(_F32) + cross.astype(_F32))
            return self.out(o_BTHV.astype(q.dtype).reshape(b, t, -1)), None
        if self.prefix_len:
            # The prefix sum joins the initial state, so every token of the call reads it. Only
            # a sequence's first call (pos 0) holds prefix tokens; later calls are causal.
            first = True if cache is None else cache["pos"] == 0
            in_prefix_BT = jnp.broadcast_to(first & (jnp.arange(t) < self.prefix_len), (b, t))
            prefix_BHKV = self.prefix_state(*self.encode(x_BTD, in_prefix_BT))
            state = prefix_BHKV if state is None else state + prefix_BHKV
        o_BTHV, new_state = run_gla(
            q_BTHK,
            k_BTHK,
            v_BTHV,
            None,
            state=state,
            segment_ids=segment_ids,
            chunk_size=self.chunk_size,
            scale=1.0,
            normalize=True,
        )
        y_BTD = self.out(o_BTHV.reshape(b, t, -1))
        return y_BTD, advance(cache, t, state=new_state, conv=conv)

    @staticmethod
    def prefix_state(ke_BTHF: jax.Array, ve_BTHW: jax.Array) -> jax.Array:
        """sum_j phi(k_e,j)^T [v_e,j, 1] over the (masked) prefix: [B, H, phi, V + 1] fp32."""
        return jnp.einsum(
            "bthf,bthw->bhfw", ke_BTHF.astype(_F32), ve_BTHW.astype(_F32), precision=_HIGHEST
        )
