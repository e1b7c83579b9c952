"""TransNormer (Qin et al. 2022, "The Devil in Linear Transformer"). NormAttention: engine L, no
gate, chunked form; DiagAttention: softmax in non-overlapping blocks (no engine).

NormAttention: o = SimpleRMSNorm(concat_h phi(q) S_t) W_o with S_t = sum_{s<=t} phi(k_s)^T v_s,
no denominator and no 1/sqrt(d) scaling (the paper's point: both make gradients unbounded); the
norm acts on the concatenated heads, width D, and has no gain.
DiagAttention: tokens are cut into blocks of `block_size` (64) and attend, causally, to the earlier
tokens of their own block only: softmax(q k^T / sqrt(d)) (T2) or ReLU logits followed by
SimpleRMSNorm (T1). Packed documents start their own blocks.

The paper stacks DiagAttention in the first half of the layers and NormAttention in the second
(`attention` picks one per mixer). Defaults are the T2 model (`transnormer_t2`: 1+elu kernel,
softmax blocks of 64) of OpenNLPLab/fairseq-evo `norm_linear_attention.py` and
`norm_local_attention.py` (docs/mixers.md#transnormer).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense, positions
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.common import QKV, advance
from linmix.models.mixers.recurrent import run_gla
from linmix.ops.gla.features import elu1

_F32 = jnp.float32
ATTENTIONS = ("norm", "diag")
KERNELS = {"elu1": elu1, "elu": jax.nn.elu}  # T2: 1 + elu; T1: elu (may be negative)
DIAG_ACTIVATIONS = ("softmax", "relu")  # T2: softmax; T1: ReLA, then SimpleRMSNorm


@dataclasses.dataclass(frozen=True)
class TransNormerOptions(Options):
    attention: str = "norm"  # "norm" (global, linear) | "diag" (block-local softmax)
    feature_map: str = "elu1"
    diag_activation: str = "softmax"
    block_size: int = 64  # `decoder_chunk_size`; the ablation's best PPL is at 64..128
    norm_eps: float = 1e-8  # SimpleRMSNorm eps
    use_short_conv: bool = False  # not in the paper
    conv_size: int = 4


def simple_rms_norm(x: jax.Array, eps: float) -> jax.Array:
    """x / (rms(x) + eps) over the last axis, no gain (fairseq-evo `SimpleRMSNorm`), in fp32."""
    x32 = x.astype(_F32)
    # The 1e-30 floor keeps sqrt differentiable at an all-zero row (ReLA can produce one).
    rms = jnp.sqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + 1e-30)
    return (x32 / (rms + eps)).astype(x.dtype)


def _attend(q_BNRHK, k_BNSHK, v_BNSHV, mask_BNRS, relu: bool) -> jax.Array:
    """Masked softmax (or ReLU) attention within each of N blocks: o [B, N, R, H, V] fp32."""
    logits_BNHRS = jnp.einsum(
        "bnrhk,bnshk->bnhrs", q_BNRHK, k_BNSHK, preferred_element_type=_F32
    ) * (q_BNRHK.shape[-1] ** -0.5)
    mask_BN1RS = mask_BNRS[:, :, None]
    if relu:
        p_BNHRS = jnp.where(mask_BN1RS, jax.nn.relu(logits_BNHRS), 0.0)
    else:  # every row keeps its own token, so no row is fully masked
        p_BNHRS = jax.nn.softmax(jnp.where(mask_BN1RS, logits_BNHRS, -jnp.inf), axis=-1)
    return jnp.einsum(
        "bnhrs,bnshv->bnrhv", p_BNHRS.astype(v_BNSHV.dtype), v_BNSHV, preferred_element_type=_F32
    )


def block_attention(q_BTHK, k_BTHK, v_BTHV, block_BT, *, size: int, lookback: bool, relu: bool):
    """Each token attends to the keys s <= t that carry its block id: o [B, T, H, V] in q.dtype.

    The sequence is cut into grid blocks of `size` (the cost is T * size, not T^2). Blocks that
    start on the grid need only their own grid block; blocks that may start off it (packed
    documents) span at most two grid blocks, so with `lookback` each grid block also sees the
    previous one.
    """
    b, t = q_BTHK.shape[:2]
    n = -(-t // size)

    def grid(x, fill=0):
        x = jnp.pad(x, [(0, 0), (0, n * size - t)] + [(0, 0)] * (x.ndim - 2), constant_values=fill)
        return x.reshape(b, n, size, *x.shape[2:])

    q_BNRHK, k_BNSHK, v_BNSHV, qid_BNR = (
        grid(q_BTHK),
        grid(k_BTHK),
        grid(v_BTHV),
        grid(block_BT, -1),
    )
    qpos_1NR = jnp.arange(n * size).reshape(1, n, size)
    kid_BNS, kpos_1NS = qid_BNR, qpos_1NR
    if lookback:

        def prev(x, fill):  # the previous grid block (`fill` before the first), then this one
            before = jnp.concatenate([jnp.full_like(x[:, :1], fill), x[:, :-1]], axis=1)
            return jnp.concatenate([before, x], axis=2)

        k_BNSHK, v_BNSHV, kid_BNS = prev(k_BNSHK, 0), prev(v_BNSHV, 0), prev(qid_BNR, -2)
        kpos_1NS = jnp.concatenate([qpos_1NR - size, qpos_1NR], axis=2)
    mask_BNRS = (qid_BNR[..., :, None] == kid_BNS[..., None, :]) & (
        qpos_1NR[..., :, None] >= kpos_1NS[..., None, :]
    )
    o_BNRHV = _attend(q_BNRHK, k_BNSHK, v_BNSHV, mask_BNRS, relu)
    return o_BNRHV.reshape(b, n * size, *o_BNRHV.shape[3:])[:, :t].astype(q_BTHK.dtype)


class TransNormer(Mixer, nnx.Module):
    """TransNormer (Qin, Han, Sun, Li, Kong, Barnes & Zhong, "The Devil in Linear Transformer",
    EMNLP 2022, arXiv:2210.10340): one of its two layer kinds per mixer.

    NormAttention ("norm"): engine L (`linmix.ops.gla`), no gate, no denominator, scale 1,
    chunked form, then SimpleRMSNorm over the concatenated heads and W_o. DiagAttention
    ("diag"): no engine, softmax attention (or ReLU logits, then SimpleRMSNorm) within
    non-overlapping blocks, causal inside each block. The paper stacks diag layers in the first
    half and norm layers in the second. Causal: decodes from a fixed-size cache (norm: the state;
    diag: the current block's keys and values; both: short-conv tails).

    Options (defaults are the T2 model; num_heads: `Mixer`):
        attention ("norm"): "norm" (NormAttention) or "diag" (DiagAttention).
        feature_map ("elu1"): NormAttention's phi, "elu1" (elu + 1, T2) or "elu" (T1).
        diag_activation ("softmax"): DiagAttention's "softmax" (T2) or "relu" (T1).
        block_size (64): DiagAttention's block length.
        norm_eps (1e-8): eps of SimpleRMSNorm, x / (rms(x) + eps).
        use_short_conv (False), conv_size (4): causal depthwise conv, then SiLU, on q, k and v
            (not in the paper).
    """

    name = "transnormer"
    Options = TransNormerOptions

    @classmethod
    def check(cls, cfg, opts: TransNormerOptions) -> None:
        super().check(cfg, opts)
        for field, allowed in (
            ("attention", ATTENTIONS),
            ("feature_map", tuple(KERNELS)),
            ("diag_activation", DIAG_ACTIVATIONS),
        ):
            if getattr(opts, field) not in allowed:
                raise ValueError(
                    f"mixer 'transnormer': {field} {getattr(opts, field)!r} not in {allowed}"
                )
        if opts.block_size < 1:
            raise ValueError(f"mixer 'transnormer': block_size must be >= 1, got {opts.block_size}")
        if opts.norm_eps < 0:
            raise ValueError(f"mixer 'transnormer': norm_eps must be >= 0, got {opts.norm_eps}")

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.options_from(cfg)
        self.dtype = dtype = self.compute_dtype(cfg)
        self.num_heads = h = o.num_heads or cfg.num_heads
        d = cfg.d_model
        self.qkv = QKV(
            d, d, d, h, short_conv=o.use_short_conv, conv_size=o.conv_size, rngs=rngs, dtype=dtype
        )
        self.out = dense(d, d, rngs=rngs, dtype=dtype)
        self.head_dim = d // h
        self.attention, self.feature_map = o.attention, o.feature_map
        self.relu = o.diag_activation == "relu"
        self.block_size, self.eps = o.block_size, o.norm_eps
        self.chunk_size = cfg.chunk_size

    def init_cache(self, batch: int, max_len: int) -> dict:
        """Norm: the state [B, H, K, V] fp32. Diag: keys and values of the current block, slot
        pos % block_size. Both: short-conv tails and the position of the next token."""
        h, k = self.num_heads, self.head_dim
        cache = {"conv": self.qkv.init_cache(batch), "pos": jnp.zeros((), jnp.int32)}
        if self.attention == "norm":
            return {**cache, "state": jnp.zeros((batch, h, k, k), _F32)}
        kv = jnp.zeros((batch, self.block_size, h, k), self.dtype)
        return {**cache, "k": kv, "v": kv}

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        (q_BTHK, k_BTHK, v_BTHV), conv = self.qkv(x_BTD, segment_ids, cache and cache["conv"])
        b, t, _ = x_BTD.shape
        if self.attention == "norm":
            phi = KERNELS[self.feature_map]
            o_BTHV, state = run_gla(
                phi(q_BTHK),
                phi(k_BTHK),
                v_BTHV,
                None,
                state=cache and cache["state"],
                scale=1.0,
                segment_ids=segment_ids,
                chunk_size=self.chunk_size,
            )
            y_BTD = simple_rms_norm(o_BTHV.reshape(b, t, -1), self.eps)
            return self.out(y_BTD), advance(cache, t, state=state, conv=conv)
        if cache is None:
            if segment_ids is None:
                block_BT = jnp.broadcast_to(jnp.arange(t) // self.block_size, (b, t))
            else:  # a block starts at every document start and every block_size tokens in it
                starts_BT = positions(segment_ids, b, t) % self.block_size == 0
                block_BT = jnp.cumsum(starts_BT, axis=1)
            o_BTHV = block_attention(
                q_BTHK,
                k_BTHK,
                v_BTHV,
                block_BT,
                size=self.block_size,
                lookback=segment_ids is not None,
                relu=self.relu,
            )
            new = None
        else:
            o_BTHV, k_cache, v_cache = self._diag_cached(q_BTHK, k_BTHK, v_BTHV, cache)
            new = advance(cache, t, k=k_cache, v=v_cache, conv=conv)
        y_BTD = o_BTHV.reshape(b, t, -1)
        if self.relu:
            y_BTD = simple_rms_norm(y_BTD, self.eps)
        return self.out(y_BTD), new

    def _diag_cached(self, q_BTHK, k_BTHK, v_BTHV, cache):
        """DiagAttention continuing from the cached block: (o, new block keys, new block values)."""
        w, (b, t) = self.block_size, q_BTHK.shape[:2]
        r = cache["pos"] % w  # slot of the first new token; slots < r hold this block's past
        if t == 1:
            k_BSHK, v_BSHV = (
                jax.lax.dynamic_update_slice_in_dim(c, x.astype(c.dtype), r, axis=1)
                for c, x in ((cache["k"], k_BTHK), (cache["v"], v_BTHV))
            )
            mask_111S = (jnp.arange(w) <= r)[None, None, None]  # stale slots > r stay unseen
            o = _attend(q_BTHK[:, None], k_BSHK[:, None], v_BSHV[:, None], mask_111S, self.relu)
            return o[:, 0].astype(q_BTHK.dtype), k_BSHK, v_BSHV
        # Prefill: lay the cached block and the new tokens on a block-aligned buffer (slot r on),
        # run the block form on it, and keep the block holding the next position.
        size = w * (-(-t // w) + 2)

        def buffer(c, x):
            base = jnp.zeros((b, size, *x.shape[2:]), c.dtype).at[:, :w].set(c)
            return jax.lax.dynamic_update_slice_in_dim(base, x.astype(c.dtype), r, axis=1)

        zeros = jnp.zeros((b, w, *q_BTHK.shape[2:]), q_BTHK.dtype)
        q_buf, k_buf, v_buf = (
            buffer(c, x) for c, x in ((zeros, q_BTHK), (cache["k"], k_BTHK), (cache["v"], v_BTHV))
        )
        block_BT = jnp.broadcast_to(jnp.arange(size) // w, (b, size))
        o_buf = block_attention(
            q_buf, k_buf, v_buf, block_BT, size=w, lookback=False, relu=self.relu
        )
        o_BTHV = jax.lax.dynamic_slice_in_dim(o_buf, r, t, axis=1).astype(q_BTHK.dtype)
        start = (r + t) // w * w
        k_BSHK, v_BSHV = (jax.lax.dynamic_slice_in_dim(x, start, w, axis=1) for x in (k_buf, v_buf))
        return o_BTHV, k_BSHK, v_BSHV
