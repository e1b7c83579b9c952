"""State-space-model ops.

- `selective_scan` (Mamba-1 S6: a per-channel, per-state-element decay), its forms
  (chunked, associative scan, per-token reference) in `api`, and one decode step
  `selective_scan_step`.
- Convolution mode of a time-invariant diagonal SSM (S4D / LSSL family) in `conv`: the kernel
  `s4d_kernel` and the FFT causal convolution `fft_conv`, with recurrent and direct oracles.

Suffix letters in this package: B batch, T time, D inner channels (Dc), M state size, G groups of
B and C, P channels per group, C chunk length, N number of chunks, H channels and L kernel length
(convolution mode).
"""

from linmix.ops.ssm.api import IMPLEMENTATIONS, selective_scan
from linmix.ops.ssm.conv import (
    DISCRETIZATIONS,
    causal_conv_reference,
    fft_conv,
    s4d_discretize,
    s4d_kernel,
    ssm_conv_reference,
)
from linmix.ops.ssm.step import selective_scan_step

__all__ = [
    "DISCRETIZATIONS",
    "IMPLEMENTATIONS",
    "causal_conv_reference",
    "fft_conv",
    "s4d_discretize",
    "s4d_kernel",
    "selective_scan",
    "selective_scan_step",
    "ssm_conv_reference",
]
