"""Triton kernels launched from JAX through jax_triton (Triton's interpreter on a CPU backend):
the launcher (`launch`), the kernel sources (`kernels`, imports triton), the chunked op (`op`),
the per-channel-gate state pass (`state_pass`) and an sm_90 compile report (`compile`). Import
the modules; nothing is loaded here."""
