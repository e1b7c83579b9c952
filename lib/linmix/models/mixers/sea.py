"""SEA (Lee et al., ICLR 2024): top-k sparse softmax attention from an estimated compressed mask,
the estimate from engine L (no gate, normalised Performer linear attention, chunked form).

Causal form, per head (gmlwns2000/sea-attention, `perlin_attention`, docs/mixers.md#sea):

1. Estimate. Normalised linear attention with FAVOR+ features (m = K ln K / nb_factor random
   features) reads values [v_s, pos(s)] (pos: a sinusoid of the position, where SEA learns a
   table); an MLP (Linear, LayerNorm, GELU, Linear, LayerNorm) maps [that, v_t, pos(t)] to scores
   over a compressed key axis of `predictor_length` = M cells.
2. Select. Row t spreads its M cells over its own keys 0..t (key s is in cell floor(s M / (t+1)),
   SEA's causal resize) and keeps round(k M / (t + 1)) cells per head, so about k keys per row;
   with `grouped_topk` the budget is shared by all heads (SEA's 'causal_batch' top-k). Rows with
   t + 1 <= k keep every cell: plain causal attention.
3. Attend. Exact softmax attention over the kept keys (plus the query's own key, so no row is
   empty), written as a masked dense product (fine at these sizes; SEA runs a CSR kernel).

The top-k carries no gradient. SEA trains the estimator by distillation from a teacher's
attention; `distill_loss` gives that loss with this layer's own dense attention as the teacher
(0.1 KL + MSE, as SEA's causal code) for a training loop to add. SEA's CNN decoder over the
(row, cell) grid is left out: the MLP gets pos(t) instead, which the CNN saw implicitly.
Decode keeps the keys and values so far (max_len slots) and the linear-attention state.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense, positions, rotary
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.common import QKV
from linmix.models.mixers.recurrent import run_gla
from linmix.ops.gla.features import positive_random_features, random_projection

_F32 = jnp.float32
_HI = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class SEAOptions(Options):
    # README example: `scripts/opt.py --method perlin --k 64 --predictor-length 256 --nbf 8`.
    k: int = 64  # keys per query (in cells: round(k * M / (t + 1)) per head)
    predictor_length: int = 256  # M, cells of the compressed key axis
    nb_factor: float = 8.0  # Performer features m = K ln K / nb_factor
    grouped_topk: bool = True  # one top-k budget over all heads of a query
    rope: bool = True  # rotary positions on the sparse attention's q, k (this library's "A")
    use_short_conv: bool = False
    conv_size: int = 4


def sinusoid(pos_BT: jax.Array, dim: int) -> jax.Array:
    """[B, T] positions -> [B, T, dim] fp32 sin/cos features (base 10000)."""
    half = (dim + 1) // 2
    freq = 10000.0 ** (-jnp.arange(half, dtype=_F32) / half)
    angle = pos_BT[..., None].astype(_F32) * freq[None, None]
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], -1)[..., :dim]


def select_cells(probs_BTHM: jax.Array, pos_BT: jax.Array, k: int, grouped: bool) -> jax.Array:
    """Top-k cells per query: [B, T, H, M] bool. Ties go to the lower (head, cell) index."""
    b, t, h, m = probs_BTHM.shape
    per_head = jnp.round(k * m / (pos_BT.astype(_F32) + 1.0))
    if grouped:
        flat, budget = probs_BTHM.reshape(b, t, h * m), jnp.clip(h * per_head, 1, h * m)[..., None]
    else:
        flat, budget = probs_BTHM, jnp.clip(per_head, 1, m)[..., None, None]
    order = jnp.argsort(-jax.lax.stop_gradient(flat), axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1, stable=True)
    return (rank < budget).reshape(b, t, h, m)


def cell_of(qpos_BT: jax.Array, kpos_BS: jax.Array, m: int) -> jax.Array:
    """Cell of key s in the row of query t: floor(s M / (t + 1)), [B, T, S] int32."""
    cell = (kpos_BS[:, None, :] * m) // (qpos_BT[:, :, None] + 1)
    return jnp.clip(cell, 0, m - 1).astype(jnp.int32)


def sparse_attention(q, k, v, sel, qpos, kpos, allowed, own):
    """Softmax attention of q [B,T,H,K] over keys k [B,S,H,K] (values v [B,S,H,V]) restricted
    to allowed [B,T,S] keys in selected cells (sel [B,T,H,M]) or the query's own key (own
    [B,T,S]). fp32; returns [B, T, H, V]."""
    b, t, h, m = sel.shape
    cell = jnp.broadcast_to(cell_of(qpos, kpos, m)[:, :, None], (b, t, h, kpos.shape[1]))
    keep = allowed[:, :, None] & (jnp.take_along_axis(sel, cell, axis=-1) | own[:, :, None])
    s = jnp.einsum("bthk,bshk->bths", q.astype(_F32), k.astype(_F32), precision=_HI)
    p = jax.nn.softmax(jnp.where(keep, s * q.shape[-1] ** -0.5, -jnp.inf), axis=-1)
    return jnp.einsum("bths,bshv->bthv", p, v.astype(_F32), precision=_HI)


class SEA(Mixer, nnx.Module):
    """Sparse linear attention with an estimated attention mask, SEA (Lee, Kim, Willette & Hwang,
    ICLR 2024, arXiv:2310.01777).

    Top-k sparse softmax attention whose mask is estimated on engine L (`linmix.ops.gla`, no gate,
    normalised FAVOR+ linear attention, chunked form) and an MLP: each query scores M cells of
    its compressed key axis, keeps about k keys, and attends exactly over them (plus its own key).
    `distill_loss` trains the estimator against the layer's own dense attention. Causal: decodes
    from a cache of all keys and values (max_len slots, growing with the sequence) plus the
    linear-attention state.

    Options (defaults of the released example; num_heads: `Mixer`):
        k (64): keys per query (round(k M / (t + 1)) cells of row t per head).
        predictor_length (256): M, cells of the compressed key axis.
        nb_factor (8.0): Performer features m = K ln K / nb_factor.
        grouped_topk (True): one top-k budget shared by all heads of a query.
        rope (True): rotary embeddings on the sparse attention's q and k.
        use_short_conv (False), conv_size (4): causal depthwise conv, then SiLU, on q, k and v.
    """

    name = "sea"
    Options = SEAOptions

    @classmethod
    def check(cls, cfg, opts) -> None:
        super().check(cfg, opts)
        for field in ("k", "predictor_length", "conv_size"):
            if getattr(opts, field) < 1:
                raise ValueError(f"mixer 'sea': {field} must be >= 1, got {getattr(opts, field)}")
        if opts.nb_factor <= 0:
            raise ValueError(f"mixer 'sea': nb_factor must be > 0, got {opts.nb_factor}")

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.options_from(cfg)
        self.dtype = dtype = self.compute_dtype(cfg)
        self.num_heads = h = o.num_heads or cfg.num_heads
        width = cfg.d_model // h * h
        self.head_dim = hd = width // h
        self.qkv = QKV(
            cfg.d_model, width, width, h, short_conv=o.use_short_conv, conv_size=o.conv_size,
            rngs=rngs, dtype=dtype,
        )  # fmt: skip
        self.o = dense(width, cfg.d_model, rngs=rngs, dtype=dtype)
        self.k, self.m, self.grouped, self.rope = o.k, o.predictor_length, o.grouped_topk, o.rope
        self.num_features = max(1, int(hd * math.log(hd) / o.nb_factor))
        # The estimator runs in fp32 so that its top-k does not flip with the compute dtype.
        self.enc = dense(4 * hd, 2 * hd, rngs=rngs, dtype=_F32, use_bias=True)
        self.enc_norm = nnx.LayerNorm(2 * hd, dtype=_F32, rngs=rngs)
        self.dec = dense(2 * hd, o.predictor_length, rngs=rngs, dtype=_F32, use_bias=True)
        self.dec_norm = nnx.LayerNorm(o.predictor_length, dtype=_F32, rngs=rngs)
        self.chunk_size = cfg.chunk_size

    def init_cache(self, batch: int, max_len: int) -> dict:
        """Keys and values of max_len positions, the linear-attention state, conv tails, pos."""
        h, hd = self.num_heads, self.head_dim
        kv = jnp.zeros((batch, max_len, h, hd), self.dtype)
        lin = jnp.zeros((batch, h, self.num_features, 2 * hd + 1), _F32)
        pos = jnp.zeros((), jnp.int32)
        return {"k": kv, "v": kv, "lin": lin, "conv": self.qkv.init_cache(batch), "pos": pos}

    def estimate(self, q, k, v, pos_BT, segment_ids=None, state=None):
        """Compressed attention scores [B, T, H, M] fp32 and the new linear-attention state."""
        hd = self.head_dim
        proj = random_projection(jax.random.key(0), hd, self.num_features)  # fixed features
        phi_q, phi_k = (
            positive_random_features(x.astype(_F32) * hd**-0.25, proj, stabilize=stab)
            for x, stab in ((q, True), (k, False))
        )
        p_BT1V = sinusoid(pos_BT, hd)[:, :, None]
        p_BTHV = jnp.broadcast_to(p_BT1V, (*v.shape[:3], hd))
        values = jnp.concatenate([v.astype(_F32), p_BTHV], -1)
        ctx, state = run_gla(
            phi_q, phi_k, values, None, state=state, segment_ids=segment_ids,
            chunk_size=self.chunk_size, scale=1.0, normalize=True,
        )  # fmt: skip
        feats = jnp.concatenate([ctx, v.astype(_F32), p_BTHV], -1)
        hidden = jax.nn.gelu(self.enc_norm(self.enc(feats)), approximate=False)
        return self.dec_norm(self.dec(hidden)), state

    def _inputs(self, x_BTD, segment_ids, cache):
        b, t, _ = x_BTD.shape
        (q, k, v), conv = self.qkv(x_BTD, segment_ids, cache and cache["conv"])
        start = 0 if cache is None else cache["pos"]
        pos_BT = positions(segment_ids, b, t) + start
        scores, lin = self.estimate(q, k, v, pos_BT, segment_ids, cache and cache["lin"])
        if self.rope:
            q, k = rotary(q, pos_BT), rotary(k, pos_BT)
        return q, k, v, pos_BT, scores, lin, conv

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        b, t, _ = x_BTD.shape
        q, k, v, qpos, scores, lin, conv = self._inputs(x_BTD, segment_ids, cache)
        sel = select_cells(jax.nn.softmax(scores, axis=-1), qpos, self.k, self.grouped)
        if cache is None:
            allowed = jnp.tril(jnp.ones((t, t), bool))[None]
            if segment_ids is not None:
                allowed = allowed & (segment_ids[:, :, None] == segment_ids[:, None, :])
            own = jnp.eye(t, dtype=bool)[None]
            o = sparse_attention(q, k, v, sel, qpos, qpos, allowed, own)
            return self.o(o.astype(self.dtype).reshape(b, t, -1)), None
        start = cache["pos"]
        k_all, v_all = (
            jax.lax.dynamic_update_slice_in_dim(c, new.astype(c.dtype), start, axis=1)
            for c, new in ((cache["k"], k), (cache["v"], v))
        )
        kpos = jnp.broadcast_to(jnp.arange(k_all.shape[1]), (b, k_all.shape[1]))
        allowed = kpos[:, None, :] <= qpos[:, :, None]
        o = sparse_attention(
            q, k_all, v_all, sel, qpos, kpos, allowed, kpos[:, None] == qpos[..., None]
        )
        new = {"k": k_all, "v": v_all, "lin": lin, "conv": conv, "pos": start + t}
        return self.o(o.astype(self.dtype).reshape(b, t, -1)), new

    def distill_loss(self, x_BTD: jax.Array, segment_ids=None) -> jax.Array:
        """SEA's estimator loss, 0.1 KL(teacher || estimate) + MSE, per attention row; the teacher
        is this layer's dense causal softmax attention (no gradient), the estimate is the cell
        scores spread over the row's keys (each key takes its cell's score). Only the estimator
        (and the q, k, v it reads) learns from it."""
        b, t, _ = x_BTD.shape
        q, k, _, pos, scores, _, _ = self._inputs(x_BTD, segment_ids, None)
        allowed = jnp.tril(jnp.ones((t, t), bool))[None]
        if segment_ids is not None:
            allowed = allowed & (segment_ids[:, :, None] == segment_ids[:, None, :])
        cell = cell_of(pos, pos, self.m)[:, :, None]
        est = jnp.take_along_axis(scores, jnp.broadcast_to(cell, (b, t, self.num_heads, t)), -1)
        # Large finite fill: 0 * (-inf) would make NaN gradients through the masked entries.
        est = jax.nn.log_softmax(jnp.where(allowed[:, :, None], est, -1e9), axis=-1)
        s = jnp.einsum("bthk,bshk->bths", q.astype(_F32), k.astype(_F32), precision=_HI)
        s = jnp.where(allowed[:, :, None], s * self.head_dim**-0.5, -1e9)
        teacher = jax.lax.stop_gradient(jax.nn.softmax(s, axis=-1))
        log_t = jax.lax.stop_gradient(jax.nn.log_softmax(s, axis=-1))
        kl = jnp.sum(teacher * (log_t - est), axis=-1).mean()
        return 0.1 * kl + jnp.mean(jnp.square(jnp.exp(est) - teacher))
