"""Chunked gated linear attention as Pallas TPU (Mosaic) kernels, forward and backward: the
chunk-sequential runners of `linmix.ops.pallas.tpu` with the engine-L chunk math of
`kernel_chunk` (every gate kind, segments, states). Interpret mode on a CPU backend."""

from __future__ import annotations

import dataclasses

from linmix.ops.gla import kernel_chunk
from linmix.ops.pallas import op, tpu


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tokens per grid step (`chunk`, the op's default chunk_size) and per sub-chunk for
    per-channel gates (`subchunk`: pairs whose decays are built as a [c, c, K] tensor)."""

    chunk: int = 64
    subchunk: int = kernel_chunk.SUBCHUNK


DEFAULT_BLOCKS = BlockSizes()

gla_pallas_tpu = op.make_op(
    tpu.forward, tpu.backward, kernel_chunk.ChunkMath(DEFAULT_BLOCKS.subchunk)
)
