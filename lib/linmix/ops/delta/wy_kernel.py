"""The chunked (gated) delta rule on a kernel of the linear recurrence that takes `w`.

After the WY / UT transform (`chunks.wy_transform`, docs/forms.md) a chunk of the delta rule is a
chunk of gated linear attention whose values depend on the entering state:

    u = U - W S,    O = (Q e^b) S + ((Q K^T) * (Gamma + I)) u,    S' = e^{b_C} S + (K e^{b_C-b})^T u

W and U need no state, so they are computed for all chunks at once in XLA (the triangular
inverse included) and differentiated by autodiff; the sequential part runs in a kernel family's
chunked op called with `w` (Mosaic GPU, jax_triton), which also returns dw.
"""

from __future__ import annotations

import jax.numpy as jnp

from linmix.ops.common import chunks as common_chunks
from linmix.ops.delta import chunks


def on_wy_kernel(kernel_op, C: int, q, k, v, beta, g, *, scale, initial_state, segment_ids,
                 interpret):  # fmt: skip
    """The delta rule through `kernel_op` (the `common.kernel_op.make_op` contract, with `w`) in
    chunks of C tokens; q, k, W and U in v's dtype."""
    T, dtype = q.shape[1], v.dtype
    x = chunks.chunk_inputs(*(a.astype(jnp.float32) for a in (q, k, v, beta)), g, C)
    W_BHNCK, U_BHNCV = chunks.wy_transform(x, common_chunks.segment_masks(segment_ids, C))
    W, U = (common_chunks.from_chunks(a, T).astype(dtype) for a in (W_BHNCK, U_BHNCV))
    return kernel_op(
        q.astype(dtype), k.astype(dtype), U, g, w=W, scale=scale, initial_state=initial_state,
        segment_ids=segment_ids, chunk_size=C, interpret=interpret,
    )  # fmt: skip
