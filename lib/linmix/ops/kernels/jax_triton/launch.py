"""Launching a Triton kernel from JAX: `jax_triton.triton_call` on a GPU, Triton's interpreter on
a CPU (through `jax.pure_callback`), so the same kernel source is tested in CI.

Kernels take their input pointers, then their output pointers, then constexpr parameters only.
`jax_triton` and `triton` are imported on first use (`jax_triton` fails to import on CPU jaxlib).
"""

from __future__ import annotations

import contextlib
import inspect
import threading

import jax
import numpy as np


@contextlib.contextmanager
def _interpreting():
    """Triton's interpreter for kernels of a process that imported Triton for GPUs: library
    functions the kernels call (`tl.sum`, ...) are interpreted too. And since the interpreter
    (3.6 to 3.8) multiplies bf16 tiles as their uint16 bit patterns, bf16 (and f16) dot operands
    are widened to fp32 first, the fp32 accumulation a GPU does."""
    import triton.language as tl
    from triton.runtime import interpreter, jit

    builder = interpreter.InterpreterBuilder
    create_dot = builder.create_dot

    def widen(x):
        if x.dtype.scalar in (tl.bfloat16, tl.float16):
            data = interpreter._convert_float(x.data, x.dtype.scalar, tl.float32, None)
            return interpreter.TensorHandle(data.view(np.float32), tl.float32)
        return x

    def fp32_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        return create_dot(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    def interpreted_call(self, *args, **kwargs):  # the language patches undone afterwards
        scope = interpreter._patch_lang(self.fn)
        try:
            return interpreter.InterpretedFunction(self.fn).rewrite()(*args, **kwargs)
        finally:
            scope.restore()

    call = jit.JITFunction.__call__
    builder.create_dot, jit.JITFunction.__call__ = fp32_dot, interpreted_call
    try:
        yield
    finally:
        builder.create_dot, jit.JITFunction.__call__ = create_dot, call


class _Storage:
    def __init__(self, array: np.ndarray):
        self.array = array

    def data_ptr(self) -> int:
        return self.array.ctypes.data

    def cpu(self):
        return self

    def copy_(self, other):
        return self


class _HostArray:
    """A C-contiguous numpy buffer as Triton's interpreter sees a tensor (host == device)."""

    def __init__(self, array: np.ndarray):
        self.array, self.dtype = array, array.dtype

    def data_ptr(self) -> int:
        return self.array.ctypes.data

    def untyped_storage(self) -> _Storage:
        return _Storage(self.array)

    def storage_offset(self) -> int:
        return 0

    def size(self):
        return self.array.shape

    def stride(self):
        return tuple(s // self.array.itemsize for s in self.array.strides)

    def new_empty(self, *args, **kwargs):
        return _HostArray(self.array)

    def set_(self, storage, offset, size, stride):
        return self

    def copy_(self, other):
        return self


# The interpreter keeps its grid position and language patches in globals: devices of one
# process (a multi-device CPU mesh) take turns.
_INTERPRETER_LOCK = threading.Lock()


def _interpret(kernel, grid, out_shapes, meta):
    from triton.runtime.interpreter import InterpretedFunction

    run = InterpretedFunction(kernel.fn)

    def host(*inputs):
        ins = [np.ascontiguousarray(np.asarray(a)).copy() for a in inputs]
        outs = [np.zeros(o.shape, o.dtype) for o in out_shapes]
        with _INTERPRETER_LOCK, _interpreting():
            run[grid](*(_HostArray(a) for a in ins + outs), **meta)
        return outs

    return host


def launch(kernel, grid: tuple[int, ...], inputs, out_shapes, interpret: bool, **meta):
    """Runs `kernel` over `grid` on `inputs`; returns arrays of `out_shapes`
    (`jax.ShapeDtypeStruct`s). `meta`: the kernel's constexprs, plus `num_warps` / `num_stages`
    (native only)."""
    launch_opts = {key: meta.pop(key) for key in ("num_warps", "num_stages") if key in meta}
    if interpret:
        host = _interpret(kernel, grid, out_shapes, meta)
        return jax.pure_callback(host, list(out_shapes), *inputs, vmap_method="sequential")
    import jax_triton

    shapes = (
        "out_type"
        if "out_type" in inspect.signature(jax_triton.triton_call).parameters
        else ("out_shape")
    )
    outs = jax_triton.triton_call(
        *inputs, kernel=kernel, grid=grid, **{shapes: list(out_shapes)}, **launch_opts, **meta
    )
    return list(outs)
