"""The Mosaic GPU chunked op: the forward and backward kernels joined by the custom-vjp kernel
runner (`linmix.ops.common.kernel_op.make_op`), always in chunks of CHUNK tokens.

    o, S_final = op(q, k, v, g, beta=None, *, scale, initial_state, segment_ids, chunk_size,
                    interpret, w=None)

g: None or [B, T, H] (per-channel gates go through `state_pass`); with `w` [B, T, H, K] the
values are u = v - w S (the delta rule after its WY transform).
"""

from __future__ import annotations

from linmix.ops.common import kernel_op
from linmix.ops.kernels.pallas_mosaic_gpu import backward, forward

CHUNK = forward.CHUNK
BLOCK_V = forward.BLOCK_V
MAX_K = forward.MAX_K

op = kernel_op.make_op(forward.forward, backward.backward, min_chunk=CHUNK)
