"""SLAB simplified linear attention (Guo et al., ICML 2024). Non-causal global reduction (one
einsum per head, no engine call) plus a 5x5 depthwise conv on V.

    k <- k + P                    (learned absolute position embedding, added to keys only)
    o_i = relu(q_i) sum_j relu(k_j)^T v_j / (relu(q_i) . sum_j relu(k_j) + 1e-6) + DWC(V)_i

then the output projection (docs/mixers.md#slab). The DWC has head_dim channels and is shared by
all heads; the reduction runs in fp32 (the reference disables autocast there). A vision mixer: the
T tokens are a row-major patch grid, square unless `grid_height` is set (otherwise a non-square T
raises ValueError). The zero-initialised position table is 14 x 14 as in SLAB-DeiT (224 px, patch
16); on another grid it is bilinearly resized (torch `interpolate`, align_corners=False), as ViTs
do when the resolution changes. Not permutation-equivariant (DWC, positions).

PRepBN, the other half of the paper, is a normalisation layer, not part of the mixer: it replaces
the block's LayerNorms by y = l*LN(x) + (1-l)*(BN(x) + eta*x) with l decaying linearly from 1 to 0
during training (RepBN alone at inference). This library's blocks use RMSNorm; PRepBN is left out.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.grid import (
    DepthwiseConv2d,
    check_grid_height,
    grid_shape,
    linear_resize_matrix,
)


@dataclasses.dataclass(frozen=True)
class SLABOptions(Options):
    qkv_bias: bool = True  # slab_deit: qkv_bias=True
    conv_size: int = 5  # DWC kernel on V (slab_deit.py `dwc`, kernel_size=5)
    pos_grid: int = 14  # side of the learned key position table (14*14 tokens); 0: none
    eps: float = 1e-6  # added to the denominator (slab_deit.py)
    grid_height: int = 0  # rows of the patch grid; 0: square (T must be a perfect square)


class SLAB(Mixer, nnx.Module):
    """Simplified linear attention of SLAB (Guo, Chen, Tang & Wang, ICML 2024, arXiv:2405.11582).

    No engine: a global reduction (one einsum per head over the whole image) with ReLU features,
    the denominator, a learned position table added to the keys only, and a depthwise conv of v
    (head-dim channels, shared by the heads) added to the output; then the output projection.
    The paper's progressive re-parameterised BatchNorm is a block norm and is not included.
    Bidirectional: no cache; tokens are a row-major patch grid; the conv and the key positions
    make it position-dependent; packed segments are not supported.

    Options (defaults of the released SLAB-DeiT code; num_heads: `Mixer`):
        qkv_bias (True): biases on the q, k, v projection.
        conv_size (5): odd kernel side of the depthwise conv on v.
        pos_grid (14): side of the zero-initialised key position table, bilinearly resized to
            other grids; 0: no table.
        eps (1e-6): added to the denominator.
        grid_height (0): rows of the patch grid; 0: square (T must be a perfect square).
    """

    name = "slab"
    Options = SLABOptions
    causal = False
    permutation_equivariant = False  # the DWC and the key positions see the grid

    @classmethod
    def check(cls, cfg, opts) -> None:
        super().check(cfg, opts)
        check_grid_height(cls.name, opts.grid_height)
        if opts.conv_size < 1 or opts.conv_size % 2 == 0:
            raise ValueError(f"mixer 'slab': conv_size must be odd and >= 1, got {opts.conv_size}")
        if opts.pos_grid < 0:
            raise ValueError(f"mixer 'slab': pos_grid must be >= 0, got {opts.pos_grid}")
        if opts.eps <= 0:
            raise ValueError(f"mixer 'slab': eps must be > 0, got {opts.eps}")

    def __init__(self, cfg, *, rngs: nnx.Rngs, options: dict | None = None):
        o = self.options_from(cfg, options)
        self.dtype = dtype = self.compute_dtype(cfg)
        d = cfg.d_model
        self.num_heads = h = o.num_heads or cfg.num_heads
        self.qkv = dense(d, 3 * d, rngs=rngs, dtype=dtype, use_bias=o.qkv_bias)
        self.proj = dense(d, d, rngs=rngs, dtype=dtype, use_bias=True)
        self.dwc = DepthwiseConv2d(d // h, o.conv_size, rngs=rngs)
        # Zero-initialised as in slab_deit.py (`positional_encoding = zeros(1, 14*14, dim)`).
        grid = o.pos_grid
        self.pos = nnx.Param(jnp.zeros((grid, grid, d), jnp.float32)) if grid else None
        self.grid_height = o.grid_height
        self.eps = o.eps

    def key_positions(self, rows: int, cols: int) -> jax.Array:
        """The [rows * cols, D] position embedding added to the keys."""
        table_PQD = self.pos[...]
        p = table_PQD.shape[0]
        if (rows, cols) != (p, p):
            row_map, col_map = linear_resize_matrix(p, rows), linear_resize_matrix(p, cols)
            table_PQD = jnp.einsum("rp,pqd,cq->rcd", row_map, table_PQD, col_map)
        return table_PQD.reshape(rows * cols, -1)

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        if segment_ids is not None:
            raise ValueError(f"mixer {self.name!r}: packed segments are not supported (one grid)")
        b, t, d = x_BTD.shape
        h = self.num_heads
        rows, cols = grid_shape(self.name, t, self.grid_height)
        q_BTD, k_BTD, v_BTD = jnp.split(self.qkv(x_BTD), 3, axis=-1)
        if self.pos is not None:
            k_BTD = k_BTD + self.key_positions(rows, cols)[None].astype(k_BTD.dtype)
        q_BTHK, k_BTHK, v_BTHV = (
            y.astype(jnp.float32).reshape(b, t, h, -1) for y in (q_BTD, k_BTD, v_BTD)
        )
        q_BTHK, k_BTHK = jax.nn.relu(q_BTHK), jax.nn.relu(k_BTHK)
        kv_BHKV = jnp.einsum("bthk,bthv->bhkv", k_BTHK, v_BTHV)
        num_BTHV = jnp.einsum("bthk,bhkv->bthv", q_BTHK, kv_BHKV)
        den_BTH = jnp.einsum("bthk,bhk->bth", q_BTHK, k_BTHK.sum(axis=1))
        o_BTHV = num_BTHV / (den_BTH[..., None] + self.eps)
        # One DWC over head_dim channels, applied to every head's V (batch and heads folded).
        v_BTV = v_BTD.reshape(b, t, h, -1).transpose(0, 2, 1, 3).reshape(b * h, t, -1)
        local_BTV = self.dwc(v_BTV, rows, cols)
        local_BTHV = local_BTV.reshape(b, h, t, -1).transpose(0, 2, 1, 3)
        o_BTD = (o_BTHV.astype(self.dtype) + local_BTHV).reshape(b, t, d)
        return self.proj(o_BTD), None
