"""Engine Δ as Pallas GPU kernels lowered to Triton, forward and backward: the chunk-sequential
runners of `linmix.ops.kernels.pallas_triton` with the WY / UT chunk math of `kernel_chunk`.
Chunks hold at least 16 tokens. Interpret mode on a CPU backend."""

from __future__ import annotations

import functools

from linmix.ops.common import kernel_op
from linmix.ops.common.layout import MIN_TRITON_DIM
from linmix.ops.delta import kernel_chunk
from linmix.ops.kernels import pallas_triton

_MATH = kernel_chunk.ChunkMath()
_op = kernel_op.make_op(
    functools.partial(pallas_triton.forward, math=_MATH),
    functools.partial(pallas_triton.backward, math=_MATH),
    min_chunk=MIN_TRITON_DIM,
)


def delta_rule_pallas_triton(q, k, v, beta, g, **kwargs):
    """The `xla.delta_rule_chunked` contract, plus `interpret`."""
    return _op(q, k, v, g, beta, **kwargs)
