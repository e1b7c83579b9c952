"""Chunked gated linear attention as Pallas GPU kernels (Triton lowering), forward and backward:
the chunk-sequential runners of `linmix.ops.pallas.gpu` with the engine-L chunk math of
`kernel_chunk`. Chunks hold at least 16 tokens (dot dims below 16 are wrong on GPUs); per-channel
gates use chunks of 16 with one explicit [C, C, K] decay tensor each (the Triton lowering has no
value slicing, so no secondary chunking). Interpret mode on a CPU backend."""

from __future__ import annotations

from linmix.ops.gla import kernel_chunk
from linmix.ops.pallas import gpu, op

VECTOR_GATE_CHUNK = 16
_op = op.make_op(
    gpu.forward, gpu.backward, kernel_chunk.ChunkMath(subchunk=1 << 30), min_chunk=gpu.MIN_DIM
)


def gla_pallas_gpu(q, k, v, g, *, chunk_size: int, **kwargs):
    """The `linmix.ops.pallas.op.make_op` contract; chunks of 16 to `chunk_size` tokens (16 for
    vector gates)."""
    if g is not None and g.ndim == 4:
        chunk_size = min(chunk_size, VECTOR_GATE_CHUNK)
    return _op(q, k, v, g, chunk_size=chunk_size, **kwargs)
