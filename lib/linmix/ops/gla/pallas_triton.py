"""Engine L as Pallas GPU kernels lowered to Triton, forward and backward: the chunk-sequential
runners of `linmix.ops.kernels.pallas_triton` with the engine-L chunk math of `kernel_chunk`.
Chunks hold at least 16 tokens (dot dims below 16 are wrong on GPUs); per-channel gates use
chunks of 16 with one explicit [C, C, K] decay tensor each (the Triton lowering has no value
slicing, so no secondary chunking). Interpret mode on a CPU backend."""

from __future__ import annotations

import functools

from linmix.ops.common import kernel_op
from linmix.ops.common.layout import MIN_TRITON_DIM
from linmix.ops.gla import kernel_chunk
from linmix.ops.kernels import pallas_triton

VECTOR_GATE_CHUNK = 16
_MATH = kernel_chunk.ChunkMath(subchunk=1 << 30)
_op = kernel_op.make_op(
    functools.partial(pallas_triton.forward, math=_MATH),
    functools.partial(pallas_triton.backward, math=_MATH),
    min_chunk=MIN_TRITON_DIM,
)


def gla_pallas_triton(q, k, v, g, *, chunk_size: int, **kwargs):
    """The `kernel_op.make_op` contract; chunks of 16 to `chunk_size` tokens (16 for vector
    gates)."""
    if g is not None and g.ndim == 4:
        chunk_size = min(chunk_size, VECTOR_GATE_CHUNK)
    return _op(q, k, v, g, chunk_size=chunk_size, **kwargs)
