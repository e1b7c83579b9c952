"""The chunked (gated) delta rule on the Triton kernels of engine L (`gla.triton`): the WY
transform in XLA, the state recurrence u = U - W S in the kernels (see `delta.mosaic_gpu`).
No or scalar gates; bf16, f16 or fp32 v (q, k, W and U are used in v's dtype)."""

from __future__ import annotations

from linmix.ops.delta.mosaic_gpu import on_gla_kernel
from linmix.ops.gla import chunks
from linmix.ops.gla import triton as gla_triton


def delta_rule_triton(q, k, v, beta, g, *, chunk_size, **kwargs):
    """The `xla.delta_rule_chunked` contract, plus `interpret`; chunks of 16 to 64 tokens."""
    C = chunks.chunk_length(q.shape[1], min(chunk_size, gla_triton.MAX_CHUNK))
    C = max(gla_triton.MIN_DIM, C)
    return on_gla_kernel(gla_triton.gla_triton, C, q, k, v, beta, g, **kwargs)
