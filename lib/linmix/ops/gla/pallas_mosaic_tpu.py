"""Engine L as Pallas TPU (Mosaic) kernels, forward and backward: the chunk-sequential runners of
`linmix.ops.kernels.pallas_mosaic_tpu` with the engine-L chunk math of `kernel_chunk` (every gate
kind, segments, states). Interpret mode on a CPU backend."""

from __future__ import annotations

import dataclasses
import functools

from linmix.ops.common import kernel_op
from linmix.ops.gla import kernel_chunk
from linmix.ops.kernels import pallas_mosaic_tpu


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tokens per grid step (`chunk`, the op's default chunk_size) and per sub-chunk for
    per-channel gates (`subchunk`: pairs whose decays are built as a [c, c, K] tensor)."""

    chunk: int = 64
    subchunk: int = kernel_chunk.SUBCHUNK


DEFAULT_BLOCKS = BlockSizes()
_MATH = kernel_chunk.ChunkMath(DEFAULT_BLOCKS.subchunk)

gla_pallas_mosaic_tpu = kernel_op.make_op(
    functools.partial(pallas_mosaic_tpu.forward, math=_MATH),
    functools.partial(pallas_mosaic_tpu.backward, math=_MATH),
)
