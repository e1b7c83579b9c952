"""Engine Δ on the jax_triton kernels (`linmix.ops.kernels.jax_triton`): the WY transform in XLA,
the state recurrence u = U - W S in the kernels (`wy_kernel`). No or scalar gates; bf16, f16 or
fp32 v (q, k, W and U are used in v's dtype)."""

from __future__ import annotations

from linmix.ops.common.chunks import chunk_length
from linmix.ops.common.layout import MIN_TRITON_DIM
from linmix.ops.delta.wy_kernel import on_wy_kernel
from linmix.ops.kernels.jax_triton import op as triton_op


def delta_rule_jax_triton(q, k, v, beta, g, *, chunk_size, **kwargs):
    """The `xla.delta_rule_chunked` contract, plus `interpret`; chunks of 16 to 64 tokens."""
    C = max(MIN_TRITON_DIM, chunk_length(q.shape[1], min(chunk_size, triton_op.MAX_CHUNK)))
    return on_wy_kernel(triton_op.op, C, q, k, v, beta, g, **kwargs)
