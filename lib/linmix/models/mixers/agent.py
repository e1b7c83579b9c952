"""Agent attention (Han et al., ECCV 2024). Two small softmax attentions through n pooled agents.

Special, non-causal (docs/mixers.md#agent): no recurrent state, O(T n d). Per head, s = K^-1/2:

    A   = AdaptiveAvgPool2d(Q) on the patch grid               (n = p x p agent tokens)
    V_A = softmax_T(s A K^T + B1) V                            (agent aggregation, [n, V])
    O   = softmax_n(s Q A^T + B2) V_A + DWC_3x3(V)             (agent broadcast)

so token i attends to token j with weight sum_a softmax(s Q A^T + B2)_ia softmax(s A K^T + B1)_aj,
a generalised linear attention with rows summing to 1. The agent biases B1 [H, n, T] and
B2 [H, T, n] are a learned 7 x 7 table per (head, agent) bilinearly resized to the grid, plus
row and column tables of length `window` (resized linearly when the grid side differs). Then
the output projection, as LeapLabTHU/Agent-Attention `agent_deit.py` (no class token here: every
token is a patch). Bidirectional: tokens form a row-major patch grid, square unless
`grid_height` is set (a non-square T raises ValueError); pooling, biases and the conv make it
position-dependent, so it is not permutation-equivariant. Packed segments are not supported.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.grid import (
    DepthwiseConv2d,
    adaptive_pool_matrix,
    check_grid_height,
    grid_shape,
    linear_resize_matrix,
)

BIAS_TABLE = 7  # side of the learned agent-bias tables (official code)


@dataclasses.dataclass(frozen=True)
class AgentOptions(Options):
    # LeapLabTHU/Agent-Attention agent_deit.py and cfgs (docs/mixers.md#agent): 49 agents
    # (7 x 7 pool), row/column bias tables of the DeiT grid side 14 (224 / 16), 3 x 3 DWC,
    # biased projections.
    agent_num: int = 49  # a perfect square p * p
    window: int = 14  # length of the row / column bias tables
    dwc_size: int = 3  # odd kernel side of the depthwise conv on v; 0 disables it
    grid_height: int = 0  # rows of the patch grid; 0: square (T must be a perfect square)


def agent_pool(q_BTHK: jax.Array, grid: tuple[int, int], side: int) -> jax.Array:
    """Agent tokens [B, A, H, K]: adaptive average pooling of q on the grid to side x side."""
    (gh, gw), (b, _, h, k) = grid, q_BTHK.shape
    ph, pw = (jnp.asarray(adaptive_pool_matrix(g, side)) for g in (gh, gw))
    q_BPQD = q_BTHK.reshape(b, gh, gw, h * k)
    a_BPQD = jnp.einsum("ip,jq,bpqd->bijd", ph, pw, q_BPQD.astype(jnp.float32))
    return a_BPQD.reshape(b, side * side, h, k)


def agent_attention(q_BTHK, k_BTHK, v_BTHV, a_BNHK, bias1_HNT, bias2_HTN, *, scale):
    """Aggregate into the agents, broadcast back (fp32): o [B, T, H, V]."""
    q_BTHK, k_BTHK, v_BTHV = (y.astype(jnp.float32) for y in (q_BTHK, k_BTHK, v_BTHV))
    logit_BHAT = scale * jnp.einsum("bnhk,bthk->bhnt", a_BNHK, k_BTHK) + bias1_HNT[None]
    agent_v_BHAV = jnp.einsum("bhnt,bthv->bhnv", jax.nn.softmax(logit_BHAT, axis=-1), v_BTHV)
    logit_BHTA = scale * jnp.einsum("bthk,bnhk->bhtn", q_BTHK, a_BNHK) + bias2_HTN[None]
    return jnp.einsum("bhtn,bhnv->bthv", jax.nn.softmax(logit_BHTA, axis=-1), agent_v_BHAV)


def _bias_init(key: jax.Array, shapes: list[tuple[int, ...]]) -> list[jax.Array]:
    """The official trunc_normal_(std=.02) cuts at +-2 absolute, i.e. at 100 std: a plain normal.
    One draw for all six tables (one compiled op rather than one per shape)."""
    sizes = [math.prod(s) for s in shapes]
    flat = 0.02 * jax.random.normal(key, (sum(sizes),))
    cuts = list(itertools.accumulate(sizes))[:-1]
    return [x.reshape(s) for x, s in zip(jnp.split(flat, cuts), shapes, strict=True)]


class Agent(Mixer, nnx.Module):
    """Agent attention (Han, Ye, Han, Xia, Pan, Wan, Song & Huang, ECCV 2024, arXiv:2312.08874).

    No engine and no recurrent state: two small softmax attentions through n agent tokens, the
    queries average-pooled on the patch grid. The agents aggregate the values (softmax over the
    keys) and broadcast them back (softmax over the agents), both with learned position biases;
    a depthwise conv of v is added, then the output projection. Cost O(T n) per head.
    Bidirectional: no cache; tokens are a row-major patch grid; pooling, biases and the conv make
    it position-dependent; packed segments are not supported.

    Options (defaults of the released DeiT configuration; num_heads: `Mixer`):
        agent_num (49): n agents, a perfect square p * p (q pooled to p x p).
        window (14): length of the learned row and column bias tables (the DeiT grid side),
            resized linearly to the grid.
        dwc_size (3): odd kernel side of the depthwise conv on v; 0 disables it.
        grid_height (0): rows of the patch grid; 0: square (T must be a perfect square).
    """

    name = "agent"
    Options = AgentOptions
    causal = False
    permutation_equivariant = False  # pooling, position biases and the conv see the grid

    @classmethod
    def check(cls, cfg, opts) -> None:
        super().check(cfg, opts)
        side = math.isqrt(max(opts.agent_num, 0))
        if opts.agent_num < 1 or side * side != opts.agent_num:
            raise ValueError(
                f"mixer 'agent': agent_num must be a perfect square, got {opts.agent_num}"
            )
        if opts.window < 1:
            raise ValueError(f"mixer 'agent': window must be >= 1, got {opts.window}")
        if opts.dwc_size < 0 or (opts.dwc_size and opts.dwc_size % 2 == 0):
            raise ValueError(f"mixer 'agent': dwc_size must be 0 or odd, got {opts.dwc_size}")
        check_grid_height(cls.name, opts.grid_height)

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.options_from(cfg)
        dtype = self.compute_dtype(cfg)
        d = cfg.d_model
        self.num_heads = h = o.num_heads or cfg.num_heads
        self.agent_side, self.grid_height = math.isqrt(o.agent_num), o.grid_height
        n, w, t = o.agent_num, o.window, BIAS_TABLE
        self.q, self.k, self.v = (dense(d, d, rngs=rngs, dtype=dtype, use_bias=True) for _ in "qkv")
        # Agent -> token biases (B1) and token -> agent biases (B2): table + row + column terms.
        shapes = [(h, n, t, t), (h, n, w), (h, n, w), (h, n, t, t), (h, w, n), (h, w, n)]
        an, ah, aw, na, ha, wa = _bias_init(rngs.params(), shapes)
        self.an_bias, self.ah_bias, self.aw_bias = nnx.Param(an), nnx.Param(ah), nnx.Param(aw)
        self.na_bias, self.ha_bias, self.wa_bias = nnx.Param(na), nnx.Param(ha), nnx.Param(wa)
        self.dwc = DepthwiseConv2d(d, o.dwc_size, rngs=rngs) if o.dwc_size else None
        self.proj = dense(d, d, rngs=rngs, dtype=dtype, use_bias=True)

    def position_biases(self, grid: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
        """B1 [H, n, T] and B2 [H, T, n] for a gh x gw grid (row-major tokens)."""
        gh, gw = grid
        th, tw = (jnp.asarray(linear_resize_matrix(BIAS_TABLE, g)) for g in grid)
        rh, rw = (jnp.asarray(linear_resize_matrix(self.ah_bias.shape[-1], g)) for g in grid)
        table1 = jnp.einsum("ir,hnrs,js->hnij", th, self.an_bias[...], tw)
        rows1 = jnp.einsum("ir,hnr->hni", rh, self.ah_bias[...])
        cols1 = jnp.einsum("js,hns->hnj", rw, self.aw_bias[...])
        bias1 = table1 + rows1[..., :, None] + cols1[..., None, :]
        table2 = jnp.einsum("ir,hnrs,js->hijn", th, self.na_bias[...], tw)
        rows2 = jnp.einsum("ir,hrn->hin", rh, self.ha_bias[...])
        cols2 = jnp.einsum("js,hsn->hjn", rw, self.wa_bias[...])
        bias2 = table2 + rows2[:, :, None, :] + cols2[:, None, :, :]
        h, n = self.an_bias.shape[:2]
        return bias1.reshape(h, n, gh * gw), bias2.reshape(h, gh * gw, n)

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        if segment_ids is not None:
            raise ValueError(f"mixer {self.name!r}: packed segments are not supported (one grid)")
        b, t, d = x_BTD.shape
        grid = grid_shape(self.name, t, self.grid_height)
        h = self.num_heads
        q, k = (y.reshape(b, t, h, -1) for y in (self.q(x_BTD), self.k(x_BTD)))
        v_BTD = self.v(x_BTD)
        o_BTHV = agent_attention(
            q,
            k,
            v_BTD.reshape(b, t, h, -1),
            agent_pool(q, grid, self.agent_side),
            *self.position_biases(grid),
            scale=(d // h) ** -0.5,
        )
        y_BTD = o_BTHV.reshape(b, t, d).astype(x_BTD.dtype)
        if self.dwc is not None:
            y_BTD = y_BTD + self.dwc(v_BTD, *grid)
        return self.proj(y_BTD), None
