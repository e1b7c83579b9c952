"""Engine Δ on the Mosaic GPU kernels (`linmix.ops.kernels.pallas_mosaic_gpu`): the WY transform
in XLA, the state recurrence u = U - W S in the kernels (`wy_kernel`). No or scalar gates; 16-bit
v (q and k are rounded to v's dtype for the wgmma products, W and U too); chunks of 64."""

from __future__ import annotations

from linmix.ops.delta.wy_kernel import on_wy_kernel
from linmix.ops.kernels.pallas_mosaic_gpu import op as mosaic


def delta_rule_pallas_mosaic_gpu(q, k, v, beta, g, *, chunk_size, **kwargs):
    """The `xla.delta_rule_chunked` contract, plus `interpret`; chunks of 64 tokens."""
    del chunk_size
    return on_wy_kernel(mosaic.op, mosaic.CHUNK, q, k, v, beta, g, **kwargs)
