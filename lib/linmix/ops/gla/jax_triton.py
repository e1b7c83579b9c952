"""Engine L on the jax_triton kernels (`linmix.ops.kernels.jax_triton`): no or scalar gates in the
chunked kernels, per-channel gates as XLA intra-chunk parts plus the kernels' state pass
(`state_pass.on_state_pass`). Chunks of 16 to 64 tokens; Triton's interpreter on a CPU."""

from __future__ import annotations

from linmix.ops.common.chunks import chunk_length
from linmix.ops.common.layout import MIN_TRITON_DIM, triton_dim
from linmix.ops.gla.state_pass import on_state_pass
from linmix.ops.kernels.jax_triton import op as triton_op
from linmix.ops.kernels.jax_triton import state_pass


def gla_jax_triton(q, k, v, g, *, chunk_size: int, **kwargs):
    """The `kernel_op.make_op` contract, plus `w` for the delta rule (no or scalar gates)."""
    if g is not None and g.ndim == 4:  # per-channel gates: pair weights from XLA
        C = max(MIN_TRITON_DIM, chunk_length(q.shape[1], min(chunk_size, triton_op.MAX_CHUNK)))
        K, V = triton_dim(q.shape[-1]), triton_dim(v.shape[-1])
        BV = min(V, triton_op.MAX_BLOCK_V)
        return on_state_pass(state_pass.state_pass, q, k, v, g, C=C, BV=BV, k_multiple=K, **kwargs)
    return triton_op.op(q, k, v, g, chunk_size=min(chunk_size, triton_op.MAX_CHUNK), **kwargs)
