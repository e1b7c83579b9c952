"""Softmax attention over a sequence sharded on `seq`: LASP-2H and the ring baseline
(docs/forms.md#softmax-attention-over-shards).

- `attention_allgather_kv` (LASP-2H's softmax layers): one all-gather of K, V (and segment ids)
  over `seq`; each shard attends from its queries to every key, causally by global position.
  Bytes per device grow linearly with T.
- `attention_ring`: ring attention, for comparison only: W steps, each attending to the K, V
  block in hand (online softmax, fp32) and passing it on with a collective-permute.

Both take `attention(q, k, v, *, scale, segment_ids)` arguments (causal; the all-gather also
takes grouped-query k, v and a sliding `window`; the ring needs q, k, v with the same heads) and
run inside a fully manual `shard_map` (batch over the other mesh axes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from linmix.parallel.lasp2 import sequence_specs, shard_map_inputs

_F32 = jnp.float32
_NEG = -1e30  # finite: a fully masked block must not turn the online softmax into NaN


def _scores(q, k, scale, q_pos, k_pos, q_seg, k_seg, window=None):
    """Masked fp32 logits [B, H, Tq, Tk] by global positions (causal, optionally a sliding
    window: q_pos - window < k_pos) and segment ids."""
    s = scale * jnp.einsum("bqhd,bkhd->bhqk", q.astype(_F32), k.astype(_F32))
    visible = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        visible &= k_pos[None, :] > q_pos[:, None] - window
    mask = visible[None] & (q_seg[:, :, None] == k_seg[:, None, :])
    return jnp.where(mask[:, None], s, _NEG)


def _local_positions(Tl: int, seq_axis: str):
    return lax.axis_index(seq_axis) * Tl + jnp.arange(Tl)


def attention_allgather_kv(mesh, seq_axis: str = "seq"):
    spec_T, _ = sequence_specs(mesh, seq_axis)

    def run(q, k, v, *, scale=None, segment_ids=None, window=None):
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        seg = jnp.zeros(q.shape[:2], jnp.int32) if segment_ids is None else segment_ids
        groups = q.shape[2] // k.shape[2]  # grouped-query heads: gather Hkv heads, then repeat

        def shard(q, k, v, seg):
            k_all, v_all, seg_all = (lax.all_gather(x, seq_axis, axis=1, tiled=True)
                                     for x in (k, v, seg))  # fmt: skip
            k_all, v_all = (jnp.repeat(x, groups, axis=2) for x in (k_all, v_all))
            Tl = q.shape[1]
            s = _scores(q, k_all, scale, _local_positions(Tl, seq_axis),
                        jnp.arange(k_all.shape[1]), seg, seg_all, window)  # fmt: skip
            o = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v_all.astype(_F32))
            return o.astype(q.dtype)

        args = dict(q=q, k=k, v=v, seg=seg)
        specs = dict(q=spec_T, k=spec_T, v=spec_T, seg=spec_T)
        return shard_map_inputs(shard, mesh, args, specs, spec_T)

    return run


def attention_ring(mesh, seq_axis: str = "seq"):
    spec_T, _ = sequence_specs(mesh, seq_axis)
    W = mesh.shape[seq_axis]

    def run(q, k, v, *, scale=None, segment_ids=None):
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        seg = jnp.zeros(q.shape[:2], jnp.int32) if segment_ids is None else segment_ids

        def shard(q, k, v, seg):
            B, Tl, H, _ = q.shape
            w = lax.axis_index(seq_axis)
            q_pos = _local_positions(Tl, seq_axis)
            m = jnp.full((B, H, Tl), _NEG, _F32)
            denom = jnp.zeros((B, H, Tl), _F32)
            acc = jnp.zeros((B, H, Tl, v.shape[-1]), _F32)
            block = (k, v, seg)
            for step in range(W):  # unrolled: every hop is visible in the HLO
                k_b, v_b, seg_b = block
                src = (w - step) % W
                s = _scores(q, k_b, scale, q_pos, src * Tl + jnp.arange(Tl), seg, seg_b)
                m_new = jnp.maximum(m, jnp.max(s, axis=-1))
                p = jnp.exp(s - m_new[..., None])
                corr = jnp.exp(m - m_new)
                denom = corr * denom + jnp.sum(p, axis=-1)
                acc = corr[..., None] * acc + jnp.einsum("bhqk,bkhd->bhqd", p, v_b.astype(_F32))
                m = m_new
                if step < W - 1:
                    perm = [(i, (i + 1) % W) for i in range(W)]
                    block = tuple(lax.ppermute(x, seq_axis, perm) for x in block)
            o = acc / denom[..., None]
            return jnp.swapaxes(o, 1, 2).astype(q.dtype)

        args = dict(q=q, k=k, v=v, seg=seg)
        specs = dict(q=spec_T, k=spec_T, v=spec_T, seg=spec_T)
        return shard_map_inputs(shard, mesh, args, specs, spec_T)

    return run
