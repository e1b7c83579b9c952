"""Pallas lowered to Mosaic GPU: building blocks with a CPU twin (`blocks`), the chunked linear
recurrence's forward and backward kernels (`forward`, `backward`, joined in `op`) and the
per-channel-gate state pass (`state_pass`). Import the modules; nothing is loaded here."""
