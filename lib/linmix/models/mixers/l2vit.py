"""L²ViT linear global attention with local concentration (Zheng, 2025). Non-causal global
reduction with a clamped denominator (one einsum per head, no engine call) plus the local
concentration module (LCM).

    a_i = relu(q_i) (tau_h sum_j relu(k_j)^T v_j) / max(relu(q_i) . sum_j relu(k_j), 100)

then the output projection. tau_h is a learned per-head temperature initialised to head_dim^-1/2
("scale on the attention output, not on k": the clamp makes them differ); the clamp at 100
stabilises training (l2vit.py `LinearAttention`; docs/mixers.md#l2vit). The reduction runs in fp32.

LCM = DW7x7 -> GELU -> norm -> DW7x7. The official LGA block adds it as a second residual branch,
x <- x + attn(norm1(x)); x <- x + LCM(norm3(x)). A mixer sees only its normalised input u, not the
residual stream x, so here y = a + LCM(LayerNorm(u + a)): the second branch with the stream
replaced by its normalised copy. The LCM's BatchNorm2d is a LayerNorm over channels here (L²ViT's
own `LN_custom` choice): batch statistics would need running state that the pure train step does
not carry. `local_concentration=False` gives the plain LinearAttention (permutation-equivariant).

A vision mixer: T tokens are a row-major patch grid for the LCM, square unless `grid_height` is
set (otherwise a non-square T raises ValueError).
The L²ViT backbone alternates these blocks with window-7 softmax attention blocks (LWA) and puts a
3x3 DW conv position encoding (CPE) before each block; both live outside the mixer.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.grid import DepthwiseConv2d, check_grid_height, grid_shape


@dataclasses.dataclass(frozen=True)
class L2ViTOptions(Options):
    qkv_bias: bool = True  # LGABlock passes qkv_bias=True
    denom_min: float = 100.0  # torch.clamp(q . sum k, 1e2)
    local_concentration: bool = True  # the LCM branch (`enhanced=True` in L2ViT's LGA blocks)
    lcm_kernel: int = 7  # LCM depthwise kernels (`kernel_size=7`)
    grid_height: int = 0  # rows of the patch grid; 0: square (T must be a perfect square)


class LCM(nnx.Module):
    """Local concentration module: DW conv -> GELU -> LayerNorm(channels) -> DW conv."""

    def __init__(self, d: int, kernel: int, *, rngs: nnx.Rngs, dtype):
        self.conv1 = DepthwiseConv2d(d, kernel, rngs=rngs)
        self.norm = nnx.LayerNorm(d, epsilon=1e-5, dtype=dtype, rngs=rngs)
        self.conv2 = DepthwiseConv2d(d, kernel, rngs=rngs)

    def __call__(self, x_BTD: jax.Array, rows: int, cols: int) -> jax.Array:
        # Exact GELU, as torch's nn.GELU default.
        y_BTD = jax.nn.gelu(self.conv1(x_BTD, rows, cols), approximate=False)
        return self.conv2(self.norm(y_BTD), rows, cols)


class L2ViT(Mixer, nnx.Module):
    """Linear global attention of L²ViT (Zheng, 2025, arXiv:2501.16182).

    No engine: a global reduction (one einsum per head over the whole image) with ReLU features,
    a learned per-head temperature on the numerator and the denominator clamped from below; the
    local concentration module (LCM: depthwise conv, GELU, LayerNorm, depthwise conv) is added
    as a second branch on LayerNorm(x + attention). Bidirectional: no cache; the LCM sees tokens
    as a row-major patch grid and makes the mixer position-dependent; packed segments are not
    supported.

    Options (defaults of the released L²ViT code; num_heads: `Mixer`):
        qkv_bias (True): biases on the q, k, v projection.
        denom_min (100.0): lower clamp of the denominator phi(q_i) . sum_j phi(k_j).
        local_concentration (True): the LCM branch; False gives the plain linear attention,
            which is permutation-equivariant.
        lcm_kernel (7): odd kernel side of the LCM's depthwise convs.
        grid_height (0): rows of the patch grid; 0: square (T must be a perfect square).
    """

    name = "l2vit"
    Options = L2ViTOptions
    causal = False
    permutation_equivariant = False  # the LCM convolves over the grid (without it: True)

    @classmethod
    def check(cls, cfg, opts) -> None:
        super().check(cfg, opts)
        check_grid_height(cls.name, opts.grid_height)
        if opts.lcm_kernel < 1 or opts.lcm_kernel % 2 == 0:
            raise ValueError(
                f"mixer 'l2vit': lcm_kernel must be odd and >= 1, got {opts.lcm_kernel}"
            )
        if opts.denom_min <= 0:
            raise ValueError(f"mixer 'l2vit': denom_min must be > 0, got {opts.denom_min}")

    def __init__(self, cfg, *, rngs: nnx.Rngs, options: dict | None = None):
        o = self.options_from(cfg, options)
        self.dtype = dtype = self.compute_dtype(cfg)
        d = cfg.d_model
        self.num_heads = h = o.num_heads or cfg.num_heads
        self.qkv = dense(d, 3 * d, rngs=rngs, dtype=dtype, use_bias=o.qkv_bias)
        self.proj = dense(d, d, rngs=rngs, dtype=dtype, use_bias=True)
        self.temperature = nnx.Param(jnp.full((h,), (d // h) ** -0.5, jnp.float32))
        self.denom_min = o.denom_min
        self.grid_height = o.grid_height
        if o.local_concentration:
            self.norm3 = nnx.LayerNorm(d, epsilon=1e-5, dtype=dtype, rngs=rngs)
            self.lcm = LCM(d, o.lcm_kernel, rngs=rngs, dtype=dtype)
        else:
            self.norm3, self.lcm = None, None
        self.permutation_equivariant = not o.local_concentration

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        if segment_ids is not None:
            raise ValueError(f"mixer {self.name!r}: packed segments are not supported (one grid)")
        b, t, d = x_BTD.shape
        h = self.num_heads
        grid = grid_shape(self.name, t, self.grid_height) if self.lcm is not None else None
        q_BTHK, k_BTHK, v_BTHV = (
            y.astype(jnp.float32).reshape(b, t, h, -1)
            for y in jnp.split(self.qkv(x_BTD), 3, axis=-1)
        )
        q_BTHK, k_BTHK = jax.nn.relu(q_BTHK), jax.nn.relu(k_BTHK)
        kv_BHKV = jnp.einsum("bthk,bthv->bhkv", k_BTHK, v_BTHV)
        kv_BHKV = kv_BHKV * self.temperature[...][None, :, None, None]
        den_BTH = jnp.einsum("bthk,bhk->bth", q_BTHK, k_BTHK.sum(axis=1))
        o_BTHV = jnp.einsum("bthk,bhkv->bthv", q_BTHK, kv_BHKV)
        o_BTHV = o_BTHV / jnp.maximum(den_BTH, self.denom_min)[..., None]
        a_BTD = self.proj(o_BTHV.astype(self.dtype).reshape(b, t, d))
        if self.lcm is None:
            return a_BTD, None
        u_BTD = x_BTD.astype(a_BTD.dtype) + a_BTD
        return a_BTD + self.lcm(self.norm3(u_BTD), *grid), None
