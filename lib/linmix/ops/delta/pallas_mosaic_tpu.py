"""Engine Δ as Pallas TPU (Mosaic) kernels, forward and backward: the chunk-sequential runners of
`linmix.ops.kernels.pallas_mosaic_tpu` with the WY / UT chunk math of `kernel_chunk`. Interpret
mode on a CPU backend."""

from __future__ import annotations

import functools

from linmix.ops.common import kernel_op
from linmix.ops.delta import kernel_chunk
from linmix.ops.kernels import pallas_mosaic_tpu

_MATH = kernel_chunk.ChunkMath()
_op = kernel_op.make_op(
    functools.partial(pallas_mosaic_tpu.forward, math=_MATH),
    functools.partial(pallas_mosaic_tpu.backward, math=_MATH),
)


def delta_rule_pallas_mosaic_tpu(q, k, v, beta, g, **kwargs):
    """The `xla.delta_rule_chunked` contract, plus `interpret`."""
    return _op(q, k, v, g, beta, **kwargs)
