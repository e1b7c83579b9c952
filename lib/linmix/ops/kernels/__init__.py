"""Kernel families, each independent of the others and of the engines: they take inputs in the
kernel layout of `linmix.ops.common.layout` (and, for the Pallas runners, an engine's per-chunk
math) and return `layout.KernelGrads` from their backward.

- `pallas_mosaic_tpu`: Pallas lowered to Mosaic TPU; chunk-sequential grid, state in VMEM.
- `pallas_triton`: Pallas lowered to Triton (GPU); a program per (batch, head) walks the chunks.
- `pallas_mosaic_gpu`: Pallas lowered to Mosaic GPU (wgmma on sm_90), kernels written per chunk.
- `jax_triton`: Triton kernels launched through jax_triton (Triton's interpreter on a CPU).
"""
