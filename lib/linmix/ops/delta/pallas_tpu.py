"""Chunked (gated) delta rule as Pallas TPU (Mosaic) kernels, forward and backward: the
chunk-sequential runners of `linmix.ops.pallas.tpu` with the WY / UT chunk math of
`kernel_chunk`. Interpret mode on a CPU backend."""

from __future__ import annotations

from linmix.ops.delta import kernel_chunk
from linmix.ops.pallas import op, tpu

_op = op.make_op(tpu.forward, tpu.backward, kernel_chunk.ChunkMath())


def delta_rule_pallas_tpu(q, k, v, beta, g, **kwargs):
    """The `xla.delta_rule_chunked` contract, plus `interpret`."""
    return _op(q, k, v, g, beta, **kwargs)
