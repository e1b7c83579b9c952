"""LinFusion generalised linear attention (Liu et al., 2024) and LiT simplified linear attention
(Wang et al., 2025): one normalised non-causal global reduction (one einsum per head, no engine
call) whose options select either paper.

    q = W_q(x + MLP_q(x)),  k = W_k(x + MLP_k(x)),  v = W_v x     (MLP: Linear-LN-LeakyReLU-Linear)
    o_i = phi(q_i) KV / (phi(q_i) . z + eps) [+ DWC(V)_i],  then the output projection

with KV = sum_j phi(k_j)^T v_j and z = sum_j phi(k_j) (normalizer "sum"), or both divided by N
(normalizer "mean": LinFusion's `kv = (k N^-1/2)^T (v N^-1/2)`, `z = q . mean(k) + 1e-4`, which
moves eps relative to the sums). Computed in fp32.

Defaults are LinFusion's (Huage001/LinFusion `src/linfusion/attention.py`): phi = elu+1, the
non-linear q/k projections with mid width = width (`projection_mid_dim=None`), normalizer "mean",
eps 1e-4, no conv, no q/k/v bias (Stable Diffusion's to_q/to_k/to_v). Permutation-equivariant
(docs/mixers.md#linfusion).

LiT = mixer_options `LIT`: phi = ReLU, plain q/k projections, a 5x5 depthwise conv on V (per
channel) added to the output, normalizer "sum" [S arXiv 2501.12976 summary]. No official code was
found: eps 1e-6 and the conv's placement (on V, after the reduction, as in SLAB) are unverified;
LiT's "fewer heads" advice is `num_heads`. With the conv the tokens are a row-major patch grid,
square unless `grid_height` is set, and the mixer is no longer permutation-equivariant.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.grid import DepthwiseConv2d, check_grid_height, grid_shape

FEATURE_MAPS = {"elu1": lambda x: jax.nn.elu(x) + 1.0, "relu": jax.nn.relu}
NORMALIZERS = ("mean", "sum")
LIT = {"feature_map": "relu", "qk_mlp": False, "normalizer": "sum", "eps": 1e-6, "conv_size": 5}


@dataclasses.dataclass(frozen=True)
class LinFusionOptions(Options):
    feature_map: str = "elu1"  # LinFusion: F.elu(x) + 1; LiT: relu
    qk_mlp: bool = True  # LinFusion's to_q_/to_k_ non-linear projections
    qk_mlp_ratio: float = 1.0  # their mid width / d_model (projection_mid_dim=None: = width)
    normalizer: str = "mean"  # "mean" (LinFusion) or "sum"
    eps: float = 1e-4  # LinFusion: `+ 1e-4` on the mean-form denominator
    conv_size: int = 0  # depthwise conv on V (LiT: 5); 0: none
    qkv_bias: bool = False  # diffusers Attention default for SD self-attention
    grid_height: int = 0  # with a conv: rows of the patch grid; 0: square


class QKMLP(nnx.Module):
    """x + Linear(LeakyReLU(LayerNorm(Linear(x)))): LinFusion's non-linear q/k input map."""

    def __init__(self, d: int, mid: int, *, rngs: nnx.Rngs, dtype):
        self.fc1 = dense(d, mid, rngs=rngs, dtype=dtype, use_bias=True)
        self.norm = nnx.LayerNorm(mid, epsilon=1e-5, dtype=dtype, rngs=rngs)
        self.fc2 = dense(mid, d, rngs=rngs, dtype=dtype, use_bias=True)

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        # torch LeakyReLU default slope 0.01
        return x_BTD + self.fc2(jax.nn.leaky_relu(self.norm(self.fc1(x_BTD)), 0.01))


class LinFusion(Mixer, nnx.Module):
    """Generalised linear attention of LinFusion (Liu, Yu, Tan & Wang, 2024, arXiv:2409.02097);
    the preset `linfusion.LIT` gives LiT (Wang et al., 2025, arXiv:2501.12976).

    No engine: a normalised global reduction (one einsum per head over the whole image),
    o_i = phi(q_i) KV / (phi(q_i) . z + eps), plus an optional depthwise conv of v, then the output
    projection. Bidirectional: no cache; permutation-equivariant unless the conv is on (then the
    tokens are a row-major patch grid); packed segments are not supported.

    Options (LinFusion's defaults; num_heads: `Mixer`):
        feature_map ("elu1"): phi on q and k, "elu1" (elu + 1) or "relu" (LiT).
        qk_mlp (True): q and k read x + MLP(x) (Linear, LayerNorm, LeakyReLU, Linear); False
            (LiT): plain projections.
        qk_mlp_ratio (1.0): hidden width of that MLP, times d_model.
        normalizer ("mean"): "mean" divides KV and z by N (LinFusion); "sum" (LiT) does not.
        eps (1e-4): added to the denominator (LiT: 1e-6).
        conv_size (0): odd kernel side of a depthwise conv of v added to the output (LiT: 5);
            0: none.
        qkv_bias (False): biases on the q, k, v projections.
        grid_height (0): with the conv, rows of the patch grid; 0: square.
    """

    name = "linfusion"
    Options = LinFusionOptions
    causal = False
    permutation_equivariant = True  # the default (LinFusion) has no conv; LiT's conv breaks it

    @classmethod
    def check(cls, cfg, opts) -> None:
        super().check(cfg, opts)
        if opts.feature_map not in FEATURE_MAPS:
            raise ValueError(
                f"mixer 'linfusion': feature_map {opts.feature_map!r} not in {sorted(FEATURE_MAPS)}"
            )
        if opts.normalizer not in NORMALIZERS:
            raise ValueError(
                f"mixer 'linfusion': normalizer {opts.normalizer!r} not in {NORMALIZERS}"
            )
        if opts.eps <= 0:
            raise ValueError(f"mixer 'linfusion': eps must be > 0, got {opts.eps}")
        if opts.qk_mlp and int(cfg.d_model * opts.qk_mlp_ratio) < 1:
            raise ValueError(
                f"mixer 'linfusion': qk_mlp_ratio={opts.qk_mlp_ratio} gives an empty MLP"
            )
        check_grid_height(cls.name, opts.grid_height)
        if opts.conv_size < 0 or (opts.conv_size and opts.conv_size % 2 == 0):
            raise ValueError(
                f"mixer 'linfusion': conv_size must be odd, or 0 (no conv), got {opts.conv_size}"
            )

    def __init__(self, cfg, *, rngs: nnx.Rngs, options: dict | None = None):
        o = self.options_from(cfg, options)
        self.dtype = dtype = self.compute_dtype(cfg)
        d = cfg.d_model
        self.num_heads = o.num_heads or cfg.num_heads
        if o.qk_mlp:
            mid = int(d * o.qk_mlp_ratio)
            self.q_mlp = QKMLP(d, mid, rngs=rngs, dtype=dtype)
            self.k_mlp = QKMLP(d, mid, rngs=rngs, dtype=dtype)
        else:
            self.q_mlp, self.k_mlp = None, None
        self.q, self.k, self.v = (
            dense(d, d, rngs=rngs, dtype=dtype, use_bias=o.qkv_bias) for _ in range(3)
        )
        self.out = dense(d, d, rngs=rngs, dtype=dtype, use_bias=True)
        self.dwc = DepthwiseConv2d(d, o.conv_size, rngs=rngs) if o.conv_size else None
        self.grid_height = o.grid_height
        self.feature_map = o.feature_map
        self.mean = o.normalizer == "mean"
        self.eps = o.eps
        self.permutation_equivariant = self.dwc is None

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        if segment_ids is not None:
            raise ValueError(f"mixer {self.name!r}: packed segments are not supported (one grid)")
        b, t, d = x_BTD.shape
        h = self.num_heads
        grid = grid_shape(self.name, t, self.grid_height) if self.dwc is not None else None
        xq_BTD = x_BTD if self.q_mlp is None else self.q_mlp(x_BTD)
        xk_BTD = x_BTD if self.k_mlp is None else self.k_mlp(x_BTD)
        v_BTD = self.v(x_BTD)
        phi = FEATURE_MAPS[self.feature_map]
        q_BTHK, k_BTHK = (
            phi(y.astype(jnp.float32).reshape(b, t, h, -1))
            for y in (self.q(xq_BTD), self.k(xk_BTD))
        )
        v_BTHV = v_BTD.astype(jnp.float32).reshape(b, t, h, -1)
        scale = 1.0 / t if self.mean else 1.0
        kv_BHKV = jnp.einsum("bthk,bthv->bhkv", k_BTHK, v_BTHV) * scale
        z_BHK = k_BTHK.sum(axis=1) * scale
        num_BTHV = jnp.einsum("bthk,bhkv->bthv", q_BTHK, kv_BHKV)
        den_BTH = jnp.einsum("bthk,bhk->bth", q_BTHK, z_BHK)
        o_BTD = (num_BTHV / (den_BTH[..., None] + self.eps)).astype(self.dtype).reshape(b, t, d)
        if self.dwc is not None:
            o_BTD = o_BTD + self.dwc(v_BTD, *grid)
        return self.out(o_BTD), None
