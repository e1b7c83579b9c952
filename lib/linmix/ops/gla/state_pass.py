"""Engine L with per-channel gates on a kernel family's state pass: the intra-chunk parts
(pair weights with secondary chunking, decayed queries and keys, chunk decays; `chunks.chunk_parts`,
differentiated by autodiff) for all chunks at once in XLA, then the sequential state pass

    o = scale * (qd S + P v),    S' = diag(a) S + kd^T v

in the family's kernels (`linmix.ops.kernels.pallas_mosaic_gpu.state_pass`,
`linmix.ops.kernels.jax_triton.state_pass`).
"""

from __future__ import annotations

import jax.numpy as jnp

from linmix.ops.common import chunks as common_chunks
from linmix.ops.common import layout
from linmix.ops.gla import chunks

_F32 = jnp.float32


def on_state_pass(state_pass, q, k, v, g, *, scale, initial_state, segment_ids, interpret, C, BV,
                  k_multiple):  # fmt: skip
    """The intra-chunk parts in XLA, then `state_pass(qd, kd, P, v, a, S0, scale, dtype,
    interpret, C, BV)` on the kernel layout: key dims padded to a multiple of `k_multiple`,
    value dims to a multiple of BV."""
    B, T, H, K = q.shape
    V, dtype = v.shape[-1], q.dtype
    f32 = (x.astype(_F32) for x in (q, k, v, g))
    p = chunks.chunk_parts(
        common_chunks.chunk_inputs(*f32, C), common_chunks.segment_masks(segment_ids, C)
    )
    N = p.P_BHNRS.shape[2]

    def flat(x):  # [B, H, N, C, D] -> [BH, Tp, D]
        return x.reshape(B * H, N * C, x.shape[-1])

    qd, kd = (layout.pad_to(flat(x), 2, k_multiple) for x in (p.q_decay_BHNCK, p.k_decay_BHNCK))
    a = layout.pad_to(p.a_BHNX.reshape(B * H, N, K), 2, k_multiple)
    v_f = layout.pad_to(layout.fold(v, C), 2, BV)
    S0 = jnp.zeros((B, H, K, V), _F32) if initial_state is None else initial_state
    S0 = layout.pad_to(S0.astype(_F32).reshape(B * H, K, V), 1, k_multiple)
    S0 = layout.pad_to(S0, 2, BV)
    o, S = state_pass(qd, kd, flat(p.P_BHNRS), v_f, a, S0, scale, dtype, interpret, C, BV)
    return layout.unfold(o[..., :V], B, T), S[:, :K, :V].reshape(B, H, K, V)
