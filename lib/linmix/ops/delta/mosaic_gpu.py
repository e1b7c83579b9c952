"""The chunked (gated) delta rule on the Mosaic GPU kernels of engine L.

After the WY / UT transform (`chunks.wy_transform`, MIXERS.md §1.5) a chunk of the delta rule
is a chunk of gated linear attention whose values depend on the entering state:

    u = U - W S,    O = (Q e^b) S + ((Q K^T) * (Gamma + I)) u,    S' = e^{b_C} S + (K e^{b_C-b})^T u

W and U need no state, so they are computed for all chunks at once in XLA (the triangular
inverse included) and differentiated by autodiff; the sequential part runs in an engine-L
kernel that takes `w` (`on_gla_kernel`; here `gla.mosaic_gpu`, which also returns dw). No or
scalar gates; 16-bit v (q and k are rounded to v's dtype for the wgmma products, W and U too).
"""

from __future__ import annotations

import jax.numpy as jnp

from linmix.ops.delta import chunks
from linmix.ops.gla import chunks as gla_chunks
from linmix.ops.gla import mosaic_gpu


def on_gla_kernel(gla_op, C: int, q, k, v, beta, g, *, scale, initial_state, segment_ids,
                  interpret):  # fmt: skip
    """The delta rule through `gla_op` (the `pallas.op.make_op` contract, with `w`) in chunks of
    C tokens; q, k, W and U in v's dtype."""
    T, dtype = q.shape[1], v.dtype
    x = chunks.chunk_inputs(*(a.astype(jnp.float32) for a in (q, k, v, beta)), g, C)
    W_BHNCK, U_BHNCV = chunks.wy_transform(x, gla_chunks.segment_masks(segment_ids, C))
    W, U = (gla_chunks.from_chunks(a, T).astype(dtype) for a in (W_BHNCK, U_BHNCV))
    return gla_op(
        q.astype(dtype), k.astype(dtype), U, g, w=W, scale=scale, initial_state=initial_state,
        segment_ids=segment_ids, chunk_size=C, interpret=interpret,
    )  # fmt: skip


def delta_rule_mosaic_gpu(q, k, v, beta, g, *, chunk_size, **kwargs):
    """The `xla.delta_rule_chunked` contract, plus `interpret`; chunks of 64 tokens."""
    del chunk_size
    if v.dtype not in mosaic_gpu.DTYPES:
        raise ValueError(
            "implementation='mosaic_gpu' takes bf16 or f16 v (wgmma operands; q and k are used "
            f"in v's dtype), got {v.dtype}; use 'pallas_gpu' or 'xla' for fp32"
        )
    return on_gla_kernel(mosaic_gpu.gla_mosaic_gpu, mosaic_gpu.CHUNK, q, k, v, beta, g, **kwargs)
