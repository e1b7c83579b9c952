"""Engine L on the Mosaic GPU kernels (`linmix.ops.kernels.pallas_mosaic_gpu`): no or scalar gates
in the chunked kernels, per-channel gates as XLA intra-chunk parts plus the kernels' state pass
(`state_pass.on_state_pass`). bf16 / f16 inputs, chunks of 64 tokens (`chunk_size` is not used)."""

from __future__ import annotations

from linmix.ops.gla.state_pass import on_state_pass
from linmix.ops.kernels.pallas_mosaic_gpu import op as mosaic
from linmix.ops.kernels.pallas_mosaic_gpu import state_pass


def gla_pallas_mosaic_gpu(q, k, v, g, *, chunk_size: int, **kwargs):
    """The `kernel_op.make_op` contract, plus `w` for the delta rule (no or scalar gates)."""
    del chunk_size
    if g is not None and g.ndim == 4:  # per-channel gates: pair weights from XLA
        return on_state_pass(
            state_pass.state_pass, q, k, v, g, C=mosaic.CHUNK, BV=mosaic.BLOCK_V, k_multiple=64,
            **kwargs,
        )  # fmt: skip
    return mosaic.op(q, k, v, g, chunk_size=mosaic.CHUNK, **kwargs)
