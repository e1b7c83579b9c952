"""Mosaic GPU building blocks with a CPU twin.

A Mosaic GPU kernel names register layouts (`plgpu.layout_cast`, layout-typed loads and iotas)
and multiplies with `plgpu.wgmma` on shared-memory operands, possibly transposed. The GPU
interpreter of Pallas (`InterpretGPUParams`, JAX >= 0.10) simulates shared memory, TMA copies and
barriers on a CPU but has no CPU rule for layout casts and no transposed wgmma operands. `Ops`
gives one kernel body both meanings: on a GPU the layout-annotated Mosaic GPU primitives, in
interpret mode the same values without annotations (layouts change no values) and the products
as fp32-accumulated `lax.dot_general`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

_F32 = jnp.float32
SWIZZLE = 128  # bytes


def smem(shape, dtype) -> plgpu.SMEM:
    """A shared-memory tile laid out for wgmma / TMA: 128-byte swizzle, (8, 128 bytes) tiles."""
    cols = SWIZZLE // jnp.dtype(dtype).itemsize
    transforms = (plgpu.TilingTransform((8, cols)), plgpu.SwizzleTransform(SWIZZLE))
    return plgpu.SMEM(shape, dtype, transforms=transforms)


def interpret_params():
    """Pallas' GPU interpreter settings (its home moved between JAX releases)."""
    try:
        from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams
    except ImportError:  # pragma: no cover - newer JAX
        InterpretGPUParams = plgpu.InterpretParams  # noqa: N806
    return InterpretGPUParams()


def store(value: jax.Array, buf, dst) -> None:
    """value -> shared-memory buf -> global-memory dst, waiting for the copy (buf is reusable)."""
    buf[...] = value
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(buf, dst)
    plgpu.wait_smem_to_gmem(0)


def output_then_state(ops: Ops, o: jax.Array, o_s, o_dst, S: jax.Array, *products) -> jax.Array:
    """A forward chunk's end: o goes out through o_s (the copy overlaps the state product) and
    the next state S + sum of `products` (as `Ops.matmul`) is returned."""
    o_s[...] = o
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(o_s, o_dst)
    S = ops.matmul(S, *products)
    plgpu.wait_smem_to_gmem(0)
    return S


def walk(ops: Ops, n: int, step, start_ref, buf, barrier, end_ref) -> None:
    """The chunk loop of a kernel: the carried [K, BV] fp32 tile is read from start_ref (global)
    through buf, carried through `step(i, carry)` for i < n, and written to end_ref."""
    plgpu.copy_gmem_to_smem(start_ref, buf, barrier)
    plgpu.barrier_wait(barrier)
    store(lax.fori_loop(0, n, step, ops.tile(buf)), buf, end_ref)


def launch(body, interpret: bool, grid: tuple[int, int], outs):
    """`plgpu.kernel` over grid (bh, vb) with outputs [(shape, dtype), ...]; interpreted on CPU."""
    kwargs = dict(interpret=interpret_params()) if interpret else {}
    return plgpu.kernel(
        body,
        out_type=tuple(jax.ShapeDtypeStruct(s, d) for s, d in outs),
        grid=grid,
        grid_names=("bh", "vb"),
        **kwargs,
    )


class Operand:
    """A shared-memory wgmma operand, optionally transposed."""

    def __init__(self, ref, transposed: bool = False):
        self.ref, self.transposed = ref, transposed

    @property
    def T(self) -> Operand:  # noqa: N802
        return Operand(self.ref, not self.transposed)


class Ops:
    """The primitives a kernel body uses, native (`interpret=False`) or simulated."""

    def __init__(self, interpret: bool):
        self.interpret = interpret
        self.W = plgpu.Layout.WGMMA

    def zeros(self, shape) -> jax.Array:
        z = jnp.zeros(shape, _F32)
        return z if self.interpret else plgpu.layout_cast(z, self.W)

    def iota(self, shape, dim: int) -> jax.Array:
        if self.interpret:
            return lax.broadcasted_iota(jnp.int32, shape, dim)
        return plgpu.broadcasted_iota(jnp.int32, shape, dim, layout=self.W)

    def tile(self, ref) -> jax.Array:
        """A [rows, cols] tile from shared memory in the wgmma accumulator layout."""
        return ref[...] if self.interpret else plgpu.load(ref, (), layout=self.W)

    def column(self, ref, n: int) -> jax.Array:
        """Vector ref [L] as an [L, n] array, constant along rows' columns (x[r] at [r, c])."""
        x = ref[...] if self.interpret else plgpu.load(ref, (), layout=self.W.reduce(1))
        return lax.broadcast_in_dim(x, (x.shape[0], n), [0])

    def row(self, ref, n: int) -> jax.Array:
        """Vector ref [L] as an [n, L] array (x[c] at [r, c])."""
        x = ref[...] if self.interpret else plgpu.load(ref, (), layout=self.W.reduce(0))
        return lax.broadcast_in_dim(x, (n, x.shape[0]), [1])

    def matmul(self, acc: jax.Array, *products) -> jax.Array:
        """acc + sum of a @ b over `products`, fp32 accumulation. Each a is a register array
        (16-bit, accumulator layout) or an `Operand`; each b an `Operand`."""
        if self.interpret:
            for a, b in products:
                acc = acc + lax.dot_general(
                    self._value(a),
                    self._value(b),
                    (((1,), (0,)), ((), ())),
                    preferred_element_type=_F32,
                )
            return acc

        def run(acc_ref):
            for a, b in products:
                plgpu.wgmma(acc_ref, self._native(a), self._native(b))

        return pl.run_state(run)(plgpu.ACC.init(acc))

    @staticmethod
    def _value(x) -> jax.Array:
        if not isinstance(x, Operand):
            return x
        value = x.ref[...]
        return value.T if x.transposed else value

    @staticmethod
    def _native(x):
        if not isinstance(x, Operand):
            return x
        return plgpu.transpose_ref(x.ref, (1, 0)) if x.transposed else x.ref
