"""Pallas kernel runners shared by the chunked engines: the kernel layout (`layout`) and the
chunk-sequential forward and reverse backward kernels for TPU (`tpu`) and GPU (`gpu`). Each
engine supplies the per-chunk math (`forward(chunk, S)`, `backward(chunk, S, lam, do)`)."""
