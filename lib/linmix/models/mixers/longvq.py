"""LongVQ (Liu et al., IJCAI 2024): VQ-attention on engine L (no gate, chunked) in a MEGA block.

MEGA block (Ma et al. 2023, `MovingAverageGatedAttention`) on the normed input x:

    mx = SiLU(EMA(x) + omega * x);   v = SiLU(x W_v);   u, z, r, hx = split(mx W_mx)
    q, k = SiLU(z) * gamma_{q,k} + beta_{q,k};   h = SiLU(hx + W_h(attn(q, k, v) * SiLU(r)))
    y = sigmoid(u) * h          (MEGA returns x + u (h - x); the block adds the residual here)

Attention: keys are RMS-normalised (no gain, as Transformer-VQ) and quantised to the nearest
codeword c_z of a per-head codebook. Query t runs ONE softmax over its causal keys: the last
`window` with the exact logit q.c_z / sqrt(K) plus a learned bias per lag, older keys through the
codebook. Softmax over quantised keys is linear attention with phi_q = exp(q Cb^T / sqrt(K) - m)
and phi_k = onehot(z) (docs/mixers.md#longvq): the older part is engine L with no gate, on the
key stream delayed by `window` (values [v, 1] carry the denominator); the window part is block-local
attention. Decode keeps the engine state (per-code value sums and counts), the last `window` codes
and values, and the EMA state: a fixed size. Straight-through VQ (k_hat = c_z + k - sg(k)): keys
learn from the window logits, the codebook from every logit; `commitment_loss` (|k - sg(c_z)|^2,
Transformer-VQ weight 1e-4) is for a training loop to add.

MEGA's EMA h_t = p beta x_t + (1 - p delta) h_{t-1}, y_t = gamma . h_t / sqrt(M) is engine L with
one head per channel (K = M, V = 1, a constant per-channel gate), so packed segments, prefill and
decode need nothing extra. LongVQ's own gating, window and codebook size are unverified
(docs/mixers.md#longvq); the defaults follow MEGA and Transformer-VQ.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.common import advance
from linmix.models.mixers.recurrent import run_gla

_F32 = jnp.float32
_HI = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class LongVQOptions(Options):
    # MEGA-LM "big" (facebookresearch/mega `mega_lm.py`): z 256 and hidden 2048 at d_model 1024.
    expand_k: float = 0.25  # z (query/key) width / d_model
    expand_v: float = 2.0  # value width / d_model
    ema_dim: int = 16  # MEGA's EMA expansion n (`--encoder-n-dim 16`)
    codebook_size: int = 512  # Transformer-VQ `n_code` (LongVQ's own value unverified)
    window: int = 32  # exact local window with a relative bias (LongVQ's value unverified)
    commitment_coef: float = 1e-4  # Transformer-VQ `c_beta`, weight of `commitment_loss`


def _param(x: jax.Array) -> nnx.Param:
    return nnx.Param(x.astype(_F32))


def _rms(x: jax.Array) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + 1e-6)


def vq_window_attention(
    q, khat_c, codes_c, v_c, seg_q, seg_c, codebook, bias, *, state, segment_ids, chunk
):
    """Softmax over quantised keys: exact (+ bias) in the window, through the codebook before it.

    With w the window and n_code the codebook size: q [B, T, H, K] fp32 (pre-scaled).
    khat_c [B, w + T, H, K] (the codewords, straight-through), codes_c [B, w + T, H] int,
    v_c [B, w + T, H, V]: the last w tokens before this call (the window buffer), then the T new
    ones; key j is at position start - w + j, query i at start + i. seg_q [B, T],
    seg_c [B, w + T]: key j counts for query i only where the ids agree (invalid buffer slots
    carry -1). codebook [H, n_code, K], bias [H, w] (bias[:, l] for lag l). state: the engine
    state [B, H, n_code, V + 1] or None. Returns (o [B, T, H, V] fp32, state).
    """
    b, t, h, _ = q.shape
    w, n_code, nv = bias.shape[1], codebook.shape[1], v_c.shape[-1]
    cb = codebook.astype(_F32)
    nb = -(-t // w)
    pad = nb * w - t  # blocks of w queries see their own and the previous block of keys

    def pairs(x):  # [B, w + T, ...] -> [B, nb, 2w, ...]
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2), constant_values=-2)
        x = x.reshape(b, nb + 1, w, *x.shape[2:])
        return jnp.concatenate([x[:, :-1], x[:, 1:]], axis=2)

    qb = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(b, nb, w, h, -1)
    sqb = jnp.pad(seg_q, ((0, 0), (0, pad)), constant_values=-3).reshape(b, nb, w)
    rel_RS = jnp.arange(2 * w)[None, :] - jnp.arange(w)[:, None]  # j - i; lag = w - (j - i)
    band_RS = (rel_RS > 0) & (rel_RS <= w)
    bias_HRS = bias.astype(_F32)[:, jnp.clip(w - rel_RS, 0, w - 1)]
    s_win = (
        jnp.einsum("bnihk,bnjhk->bnhij", qb, pairs(khat_c.astype(_F32)), precision=_HI)
        + bias_HRS[None, None]
    )
    ok = band_RS[None, None] & (pairs(seg_c)[:, :, None, :] == sqb[:, :, :, None])  # [B, nb, R, S]
    s_win = jnp.where(ok[:, :, None], s_win, -jnp.inf)
    s_code = jnp.einsum("bthk,hck->bthc", q, cb, precision=_HI)
    # One shift for both parts keeps every exponent <= 0; it cancels in the ratio.
    m_win = jnp.max(s_win, axis=-1).transpose(0, 1, 3, 2).reshape(b, -1, h)[:, :t]
    m = jax.lax.stop_gradient(jnp.maximum(m_win, jnp.max(s_code, axis=-1)))
    m_blocks = jnp.pad(m, ((0, 0), (0, pad), (0, 0))).reshape(b, nb, w, h).transpose(0, 1, 3, 2)
    a_win = jnp.exp(s_win - m_blocks[..., None])
    num_w = jnp.einsum("bnhij,bnjhv->bnihv", a_win, pairs(v_c.astype(_F32)), precision=_HI)
    num_w = num_w.reshape(b, -1, h, nv)[:, :t]
    den_w = a_win.sum(-1).transpose(0, 1, 3, 2).reshape(b, -1, h)[:, :t]
    # Keys older than the window: key j enters the engine at query j (W steps late).
    live = (seg_c[:, :t] == seg_q)[:, :, None, None].astype(_F32)
    k_eng = jax.nn.one_hot(codes_c[:, :t], n_code, dtype=_F32) * live
    v_eng = jnp.concatenate([v_c[:, :t].astype(_F32), jnp.ones((b, t, h, 1), _F32)], -1) * live
    phi_q = jnp.exp(s_code - m[..., None])
    out, state = run_gla(
        phi_q, k_eng, v_eng, None, state=state, segment_ids=segment_ids, chunk_size=chunk, scale=1.0
    )
    o = (out[..., :nv] + num_w) / (out[..., nv:] + den_w[..., None] + 1e-30)
    return o, state


class LongVQ(Mixer, nnx.Module):
    """LongVQ, vector-quantised attention in a MEGA block (Liu, Wang, Li, Wang, Lin & Li,
    IJCAI 2024, arXiv:2404.11163).

    Engine L (`linmix.ops.gla`) twice, chunked form: MEGA's damped EMA (one head per channel with
    a constant per-channel gate) feeds the gates and the shared query/key stream; keys are
    RMS-normalised and quantised to a per-head codebook (straight-through), so the softmax over
    keys older than the window is linear attention with no gate over the codewords, while the
    window itself is exact with a learned bias per lag. Causal: decodes from a fixed-size cache
    (EMA state, per-code value sums, the window's codes and values).

    Options (MEGA and Transformer-VQ defaults where LongVQ gives none; num_heads: `Mixer`):
        expand_k (0.25): width of the shared query/key stream z, times d_model.
        expand_v (2.0): value width, times d_model.
        ema_dim (16): state size of the EMA per channel.
        codebook_size (512): codewords per head.
        window (32): tokens attended exactly, with the per-lag bias.
        commitment_coef (1e-4): weight a training loop gives `commitment_loss` (the mixer does
            not apply it).
    """

    name = "longvq"
    Options = LongVQOptions

    @classmethod
    def check(cls, cfg, opts) -> None:
        super().check(cfg, opts)
        for field in ("ema_dim", "codebook_size", "window"):
            if getattr(opts, field) < 1:
                raise ValueError(
                    f"mixer 'longvq': {field} must be >= 1, got {getattr(opts, field)}"
                )
        if opts.commitment_coef < 0:
            raise ValueError(
                f"mixer 'longvq': commitment_coef must be >= 0, got {opts.commitment_coef}"
            )

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.options_from(cfg)
        self.dtype = dtype = self.compute_dtype(cfg)
        d = self.d_model = cfg.d_model
        self.num_heads = h = o.num_heads or cfg.num_heads
        self.zdim, self.hdim = int(d * o.expand_k), int(d * o.expand_v)
        self.head_k, self.head_v = self.zdim // h, self.hdim // h
        n, self.window, self.chunk_size = o.ema_dim, o.window, cfg.chunk_size
        self.commitment_coef = o.commitment_coef
        normal = lambda std, *shape: std * jax.random.normal(rngs.params(), shape)  # noqa: E731
        # MEGA `MultiHeadEMA.reset_parameters`; beta alternates +-1 ("seems more stable").
        self.ema_alpha, self.ema_delta = _param(normal(0.2, d, n)), _param(normal(0.2, d, n))
        sign = jnp.where(jnp.arange(n) % 2 == 0, 1.0, -1.0)
        self.ema_beta = _param(normal(0.02, d, n) + sign[None])
        self.ema_gamma, self.ema_omega = _param(normal(1.0, d, n)), _param(normal(1.0, d))
        self.v_proj = dense(d, self.hdim, rngs=rngs, dtype=dtype, use_bias=True)
        self.mx_proj = dense(
            d, self.zdim + self.hdim + 2 * d, rngs=rngs, dtype=dtype, use_bias=True
        )
        self.h_proj = dense(self.hdim, d, rngs=rngs, dtype=dtype, use_bias=True)
        self.qk_gamma, self.qk_beta = (
            _param(normal(0.02, 2, self.zdim)),
            _param(jnp.zeros((2, self.zdim))),
        )
        self.rel_bias = _param(normal(0.02, h, o.window))
        # Unit-normal codewords match the RMS-normalised keys in scale.
        self.codebook = _param(normal(1.0, h, o.codebook_size, self.head_k))

    def init_cache(self, batch: int, max_len: int) -> dict:
        """EMA state, VQ engine state, the last `window` codes and values, the next position."""
        h, w, n_code = self.num_heads, self.window, self.codebook.shape[1]
        return {
            "ema": jnp.zeros((batch, self.d_model, self.ema_alpha.shape[1], 1), _F32),
            "vq": jnp.zeros((batch, h, n_code, self.head_v + 1), _F32),
            "codes": jnp.zeros((batch, w, h), jnp.int32),
            "values": jnp.zeros((batch, w, h, self.head_v), self.dtype),
            "pos": jnp.zeros((), jnp.int32),
        }

    def ema(self, x_BTD: jax.Array, segment_ids=None, state=None):
        """MEGA's damped EMA: engine L, D heads of K = ema_dim, V = 1. (y [B,T,D] fp32, state)."""
        b, t, d = x_BTD.shape
        p = jax.nn.sigmoid(self.ema_alpha[...])
        log_q = jnp.log1p(-p * jax.nn.sigmoid(self.ema_delta[...]))  # q = 1 - p * delta in (0, 1)
        scale = self.ema_alpha.shape[1] ** -0.5

        def full(a_DM):
            return jnp.broadcast_to(a_DM, (b, t, *a_DM.shape))

        y, state = run_gla(
            full(self.ema_gamma[...] * scale),
            full(p * self.ema_beta[...]),
            x_BTD.astype(_F32)[..., None],
            full(log_q),
            state=state,
            segment_ids=segment_ids,
            chunk_size=self.chunk_size,
            scale=1.0,
        )
        return y[..., 0], state

    def features(self, x_BTD: jax.Array, segment_ids=None, ema_state=None):
        """(q [B,T,H,K] fp32 scaled, k [B,T,H,K] fp32 normalised, v, u, r, hx, EMA state)."""
        b, t, _ = x_BTD.shape
        h, d = self.num_heads, self.d_model
        v = jax.nn.silu(self.v_proj(x_BTD)).reshape(b, t, h, self.head_v)
        e, ema_state = self.ema(x_BTD, segment_ids, ema_state)
        x32 = x_BTD.astype(_F32)
        mx = jax.nn.silu(e + self.ema_omega[...][None, None] * x32).astype(self.dtype)
        u, z, r, hx = jnp.split(self.mx_proj(mx), [d, d + self.zdim, d + self.zdim + self.hdim], -1)
        z = jax.nn.silu(z).astype(_F32)[None]
        gamma, beta = self.qk_gamma[...][:, None, None], self.qk_beta[...][:, None, None]
        qz, kz = (z * gamma + beta).reshape(2, b, t, h, -1)
        q, k = qz * self.head_k**-0.5, _rms(kz)
        return q, k, v, jax.nn.sigmoid(u), jax.nn.silu(r), hx, ema_state

    def quantize(self, k_BTHK: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Nearest codeword per head: (codes [B, T, H] int32, codewords [B, T, H, K] fp32)."""
        cb = self.codebook[...]
        dist = (
            jnp.sum(jnp.square(k_BTHK), -1)[..., None]
            - 2 * jnp.einsum("bthk,hck->bthc", k_BTHK, cb, precision=_HI)
            + jnp.sum(jnp.square(cb), -1)[None, None]
        )
        codes = jnp.argmin(jax.lax.stop_gradient(dist), axis=-1).astype(jnp.int32)
        return codes, cb[jnp.arange(cb.shape[0])[None, None], codes]

    def commitment_loss(self, x_BTD: jax.Array, segment_ids=None) -> jax.Array:
        """Mean over tokens of sum over heads |k - sg(c_z)|^2 (keys only; scale by
        `commitment_coef`). The codebook itself learns through the attention logits."""
        k = self.features(x_BTD, segment_ids)[1]
        _, c = self.quantize(k)
        return jnp.mean(jnp.sum(jnp.square(k - jax.lax.stop_gradient(c)), axis=(-2, -1)))

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        b, t, _ = x_BTD.shape
        w = self.window
        q, k, v, u, r, hx, ema_state = self.features(x_BTD, segment_ids, cache and cache["ema"])
        codes, c = self.quantize(k)
        # Straight-through VQ: the value is the codeword; keys get the window logits' gradient.
        khat = c + k - jax.lax.stop_gradient(k)
        if cache is None:
            seg_q = jnp.zeros((b, t), jnp.int32) if segment_ids is None else segment_ids
            buf_codes = jnp.zeros((b, w, self.num_heads), jnp.int32)
            buf_v = jnp.zeros((b, w, *v.shape[2:]), v.dtype)
            buf_k = jnp.zeros((b, w, *k.shape[2:]), _F32)
            buf_seg = jnp.full((b, w), -1, seg_q.dtype)
        else:
            seg_q = jnp.zeros((b, t), jnp.int32)
            buf_codes, buf_v = cache["codes"], cache["values"].astype(v.dtype)
            buf_k = self.codebook[...][jnp.arange(self.num_heads)[None, None], buf_codes]
            valid = cache["pos"] - w + jnp.arange(w) >= 0  # slots before the first token: none
            buf_seg = jnp.broadcast_to(jnp.where(valid, 0, -1), (b, w)).astype(jnp.int32)
        codes_c = jnp.concatenate([buf_codes, codes], axis=1)
        v_c = jnp.concatenate([buf_v, v], axis=1)
        o, vq_state = vq_window_attention(
            q,
            jnp.concatenate([buf_k, khat], axis=1),
            codes_c,
            v_c,
            seg_q,
            jnp.concatenate([buf_seg, seg_q], axis=1),
            self.codebook[...],
            self.rel_bias[...],
            state=cache and cache["vq"],
            segment_ids=segment_ids,
            chunk=self.chunk_size,
        )
        y_BTD = (o.reshape(b, t, -1) * r.astype(_F32)).astype(self.dtype)
        h = jax.nn.silu(hx + self.h_proj(y_BTD))
        new = dict(codes=codes_c[:, t:], values=v_c[:, t:], ema=ema_state, vq=vq_state)
        return (u * h).astype(self.dtype), advance(cache, t, **new)
