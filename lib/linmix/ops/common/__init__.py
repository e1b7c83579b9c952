"""What the engines and every kernel family share; it imports no engine and no family.

- `chunks`: chunk layout [B, H, N, C, .], gate layouts, segment masks, the masked exponential,
  within-chunk sums.
- `layout`: the kernel layout (heads folded into the batch, time padded to chunks), the per-chunk
  values a kernel body sees, `KernelGrads`, Triton tile sizes and decay rows.
- `tiles`: 2-D tile helpers for per-chunk math inside Pallas kernels.
- `kernel_op`: the custom-vjp kernel runner joining a family's forward and backward.
- `contract`: the declared capabilities of every implementation and the check of a request.
- `checks`: input validation shared by the public ops.
"""
