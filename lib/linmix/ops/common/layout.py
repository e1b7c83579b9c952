"""The kernel layout of a chunked engine's inputs, and the per-chunk values a kernel body sees.

Heads are folded into the batch and time is zero-padded to N * C chunks:
q, k [BH, Tp, K]; v [BH, Tp, V]; g [BH, Tp, X] (X = 1 scalar, K per channel) or None; g_row
[BH * N, 1, C] (scalar gates as rows, for pair decays) or None; beta [BH, Tp, 1] or None. The
segment arrays are per batch row (index bh // H): seg_col [B, Tp, 1] int32, seg_row [B * N, 1, C],
reads / inlast [B, Tp, 1] fp32 (see `chunks.segment_masks`), or None.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from linmix.ops.common import chunks

_F32 = jnp.float32


class Seg(NamedTuple):
    """Segment bookkeeping of one chunk."""

    col: jax.Array  # [C, 1] int32 segment id per token
    row: jax.Array  # [1, C] the same ids as a row
    reads: jax.Array  # [C, 1] fp32 1 where the query still reads the carried state
    inlast: jax.Array  # [C, 1] fp32 1 where the key belongs to the segment open at the chunk end


class Chunk(NamedTuple):
    """One chunk's values inside a kernel (None where the engine or call has no such input)."""

    q: jax.Array
    k: jax.Array
    v: jax.Array
    g: jax.Array | None
    g_row: jax.Array | None
    beta: jax.Array | None
    seg: Seg | None


class Grads(NamedTuple):
    """One chunk's gradients; lam_prev is the gradient of the state entering the chunk."""

    dq: jax.Array
    dk: jax.Array
    dv: jax.Array
    dg: jax.Array | None
    dbeta: jax.Array | None
    lam_prev: jax.Array


class KernelGrads(NamedTuple):
    """What every kernel family's backward returns: fp32 gradients in the kernel layout, None
    for the inputs a call does not have (dw: only with `w`, the delta rule's WY form)."""

    dq: jax.Array
    dk: jax.Array
    dv: jax.Array
    dg: jax.Array | None
    dbeta: jax.Array | None
    dS0: jax.Array
    dw: jax.Array | None = None


class Inputs(NamedTuple):
    q: jax.Array
    k: jax.Array
    v: jax.Array
    g: jax.Array | None
    g_row: jax.Array | None
    beta: jax.Array | None
    seg_col: jax.Array | None
    seg_row: jax.Array | None
    reads: jax.Array | None
    inlast: jax.Array | None
    heads: int
    w: jax.Array | None = None  # [BH, Tp, K]: the delta rule's W (u = v - W S)

    def token_arrays(self) -> list[jax.Array]:
        """The per-head [BH, Tp, D] arrays, in the order kernels read them."""
        return [a for a in (self.q, self.k, self.v, self.g, self.beta) if a is not None]


def fold(x_BTHD: jax.Array, C: int) -> jax.Array:
    """[B, T, H, D] -> [B * H, Tp, D], zero-padded in time."""
    B, T, H, D = x_BTHD.shape
    Tp = -(-T // C) * C
    x = jnp.pad(x_BTHD, ((0, 0), (0, Tp - T), (0, 0), (0, 0)))
    return x.transpose(0, 2, 1, 3).reshape(B * H, Tp, D)


def unfold(x: jax.Array, B: int, T: int) -> jax.Array:
    """[B * H, Tp, D] -> [B, T, H, D]."""
    BH, Tp, D = x.shape
    return x.reshape(B, BH // B, Tp, D).transpose(0, 2, 1, 3)[:, :T]


def prepare(q, k, v, g_BTHX, segment_ids, C: int, beta_BTH=None, w_BTHK=None) -> Inputs:
    B, T, H, _ = q.shape
    g = None if g_BTHX is None else fold(g_BTHX, C).astype(_F32)
    g_row = None
    if g is not None and g.shape[-1] == 1:
        g_row = g.reshape(-1, 1, C)
    beta = None if beta_BTH is None else fold(beta_BTH[..., None], C)
    seg = (None,) * 4
    if segment_ids is not None:
        masks = chunks.segment_masks(segment_ids, C)
        Tp = -(-T // C) * C
        seg_BT = jnp.pad(segment_ids.astype(jnp.int32), ((0, 0), (0, Tp - T)), mode="edge")
        seg = (
            seg_BT[..., None],
            seg_BT.reshape(-1, 1, C),
            masks.reads_state_BNC.reshape(B, Tp, 1).astype(_F32),
            masks.in_last_seg_BNC.reshape(B, Tp, 1).astype(_F32),
        )
    w = None if w_BTHK is None else fold(w_BTHK, C)
    return Inputs(fold(q, C), fold(k, C), fold(v, C), g, g_row, beta, *seg, heads=H, w=w)


# Tiles of the Triton-dialect kernels (Pallas with the Triton lowering, and jax_triton): dot dims
# below 16 are silently wrong on GPUs and blocks are powers of two.
MIN_TRITON_DIM = 16


def triton_dim(n: int) -> int:
    """A feature dim padded to a power of two >= MIN_TRITON_DIM (one tile)."""
    return max(MIN_TRITON_DIM, 1 << max(n - 1, 0).bit_length())


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """Triton launch parameters of a kernel family (ignored in interpret mode)."""

    num_warps: int = 4
    num_stages: int = 1


# Per-token decay rows for the kernels that take b, qs, ks outside (Mosaic GPU, jax_triton).


def pad_to(x: jax.Array, axis: int, multiple: int) -> jax.Array:
    extra = -x.shape[axis] % multiple
    if not extra:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths)


def _per_head(x: jax.Array | None, heads: int) -> jax.Array | None:
    """[B, Tp, 1] per batch row -> [B * H, Tp]."""
    return None if x is None else jnp.repeat(x[..., 0], heads, axis=0)


def decay_rows(x: Inputs, C: int):
    """The per-token rows [BH, 4, Tp] (b, qs, ks, chunk-local segment id) and the chunk decays
    a [BH, N], all fp32."""
    BH, Tp, _ = x.q.shape
    N = Tp // C
    if x.g is None:
        b = jnp.zeros((BH, N, C), _F32)
    else:
        b = jnp.cumsum(x.g[..., 0].reshape(BH, N, C), axis=-1)
    last = b[..., -1:]
    qs, ks, a = jnp.exp(b), jnp.exp(last - b), jnp.exp(last[..., 0])
    seg = jnp.zeros_like(b)
    if x.seg_col is not None:
        reads = _per_head(x.reads, x.heads).reshape(BH, N, C)
        inlast = _per_head(x.inlast, x.heads).reshape(BH, N, C)
        ids = _per_head(x.seg_col, x.heads).reshape(BH, N, C)
        seg = (ids - ids[..., :1]).astype(_F32)
        qs, ks, a = qs * reads, ks * inlast, a * reads[..., -1]
    rows = jnp.stack([b, qs, ks, seg], axis=1)  # [BH, 4, N, C]
    return rows.reshape(BH, 4, Tp), a


def gate_grad(sums: jax.Array, da: jax.Array, a: jax.Array, C: int) -> jax.Array:
    """dg [BH, Tp, 1] from fe, fs [BH, 2, Tp] and the chunk sums da [BH, N]."""
    BH, _, Tp = sums.shape
    fe, fs = (sums[:, i].reshape(BH, -1, C) for i in (0, 1))
    from_end = jnp.flip(jnp.cumsum(jnp.flip(fe, -1), -1), -1)
    # exclusive sum by shifting, not cumsum - fs: the late, undecayed terms would swamp the rest
    from_start = jnp.cumsum(jnp.pad(fs[..., :-1], ((0, 0), (0, 0), (1, 0))), -1)
    dg = from_end + from_start + (a * da)[..., None]
    return dg.reshape(BH, Tp, 1)
