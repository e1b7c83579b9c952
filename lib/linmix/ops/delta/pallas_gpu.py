"""Chunked (gated) delta rule as Pallas GPU kernels (Triton lowering), forward and backward: the
chunk-sequential runners of `linmix.ops.pallas.gpu` with the WY / UT chunk math of
`kernel_chunk`. Chunks hold at least 16 tokens. Interpret mode on a CPU backend."""

from __future__ import annotations

from linmix.ops.delta import kernel_chunk
from linmix.ops.pallas import gpu, op

_op = op.make_op(gpu.forward, gpu.backward, kernel_chunk.ChunkMath(), min_chunk=gpu.MIN_DIM)


def delta_rule_pallas_gpu(q, k, v, beta, g, **kwargs):
    """The `xla.delta_rule_chunked` contract, plus `interpret`."""
    return _op(q, k, v, g, beta, **kwargs)
