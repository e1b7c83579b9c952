"""SSE (Pan et al. 2025), Sparse State Expansion on GLA. Engine L, per-channel decay, chunked mask
form.

Per head there is a shared state S0 and Z partition states S1..SZ (each K x V). A router
e_t = softmax(x_t W_e) over the Z partitions picks the top-k writers W_t and readers R_t:

    S0_t = diag(a1_t) S0_{t-1} + k1_t^T v_t
    Si_t = diag(a2_t)^{m_ti} Si_{t-1} + m_ti e_ti k2_t^T v_t,      m_ti = 1[i in W_t]
    o_t  = (q1_t S0_t + sum_{i in R_t} e_ti q2_t Si_t) / sqrt(K)

Unselected partitions neither write nor decay. The mask form (docs/mixers.md#sse, fla
`ops/sse/mask`) runs all of it as one GLA call on (Z + 1) * H heads: head block 0 is the shared
path, block i carries q2 e_i 1[R], k2 e_i 1[W], v 1[W] and the gate g2 1[W] (log-gate 0 = no
decay), and the blocks are summed. It costs (Z + 1) x a GLA layer; the varlen form (sorting
tokens by partition) is an equivalent, faster layout that is not implemented here. Top-k masks
carry no gradient; the router learns through e (read and write gates) and the load-balancing
loss `aux_loss`.

Maps: q = SiLU, k = softmax over the head dim, v = SiLU; q2 = q1 + LoRA(x), k2 = k1 + LoRA(x)
(rank = head value dim, built from the projections before the conv); an optional short conv acts
on q1, k1 only. The key softmax is dense, as in the released code: the row-level top-k of the
paper's notation is not applied (docs/mixers.md#code-versus-paper). Two rank-16 GLA gates
log a = logsigmoid(.) / 16. Output RMSNorm(o) * SiLU(x W_g1 W_g2) with a rank head-value-dim gate.
Only SSE-GLA is implemented (the paper's main model); SSE-GDN (the same routing on engine Δ) is
not.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import ShortConv, dense, rms_norm
from linmix.models.mixers.base import Mixer
from linmix.models.mixers.common import LinearOptions, advance
from linmix.models.mixers.recurrent import run_gla

_F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class SSEOptions(LinearOptions):
    # fla `SSEConfig`: 6 heads of 256 at d_model 2048 for both keys and values (expand_v = 1).
    expand_k: float = 0.75
    expand_v: float = 0.75
    num_sparse_partition: int = 4  # Z
    # Top-k writers / readers: the paper's main models are "n4k1" and the layer default is 1
    # (`SSEConfig` itself says 2).
    num_writer: int = 1
    num_reader: int = 1
    use_q_softmax: bool = False  # False: SiLU on q
    use_k_softmax: bool = True  # softmax over the key head dim (ablation: SiLU is worse)
    gate_low_rank_dim: int = 16
    gate_logit_normalizer: float = 16.0
    aux_loss_coef: float = 0.01  # weight of `aux_loss` in the training loss (`SSEConfig`)


def _low_rank(d_in: int, rank: int, d_out: int, *, rngs, dtype, bias: bool = False) -> nnx.List:
    """A rank-limited projection x W_down W_up (+ bias), applied with `_apply`."""
    return nnx.List(
        [
            dense(d_in, rank, rngs=rngs, dtype=dtype),
            dense(rank, d_out, rngs=rngs, dtype=dtype, use_bias=bias),
        ]
    )


def _apply(pair: nnx.List, x: jax.Array) -> jax.Array:
    return pair[1](pair[0](x))


class SSE(Mixer, nnx.Module):
    """Sparse state expansion on GLA, SSE (Pan, An, Li, Chou, Zhu, Wang, Wang, Wang & Li, ICLR 2026,
    arXiv:2507.16577).

    Engine L (`linmix.ops.gla`) with per-key-channel decay, chunked masked form: each head has a
    shared state and Z partition states; a router picks each token's top-k writer and reader
    partitions (unselected ones neither write nor decay), and all of it runs as one GLA call on
    (Z + 1) H heads. q = SiLU, k = softmax over the head dim, v = SiLU; output is a per-head
    RMSNorm times SiLU of a low-rank gate, then W_o. Causal: decodes from a fixed-size cache
    (Z + 1 states per head and the short-conv tails).

    Options (defaults of the paper and fla's `SSEConfig`; num_heads: `Mixer`):
        expand_k (0.75), expand_v (0.75): total key / value width over all heads, times d_model.
        num_sparse_partition (4): Z, partition states per head (at least 2).
        num_writer (1), num_reader (1): top-k partitions a token writes to / reads from.
        use_q_softmax (False): softmax over the head dim on q instead of SiLU.
        use_k_softmax (True): softmax over the head dim on k; False uses SiLU.
        gate_low_rank_dim (16), gate_logit_normalizer (16.0): rank and divisor of the two GLA
            gates (shared path and partitions).
        use_short_conv (False), conv_size (4): causal depthwise conv on the shared q and k.
        use_output_gate (True): the low-rank SiLU output gate; False leaves the RMSNorm alone.
        aux_loss_coef (0.01): weight a training loop gives the load-balancing loss `aux_loss`
            (the mixer does not apply it).
    """

    name = "sse"
    Options = SSEOptions

    @classmethod
    def check(cls, cfg, opts) -> None:
        super().check(cfg, opts)
        n = opts.num_sparse_partition
        if n < 2:
            raise ValueError(f"mixer 'sse': num_sparse_partition must be >= 2, got {n}")
        for field in ("num_writer", "num_reader"):
            k = getattr(opts, field)
            if not 1 <= k < n:
                raise ValueError(
                    f"mixer 'sse': {field} must be in [1, num_sparse_partition={n}), got {k}"
                )
        if opts.gate_low_rank_dim < 1 or opts.gate_logit_normalizer <= 0:
            raise ValueError("mixer 'sse': gate_low_rank_dim and gate_logit_normalizer must be > 0")

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.options_from(cfg)
        dtype = self.compute_dtype(cfg)
        d = cfg.d_model
        self.num_heads = h = o.num_heads or cfg.num_heads
        key_dim, value_dim = int(d * o.expand_k), int(d * o.expand_v)
        self.head_k, self.head_v = key_dim // h, value_dim // h
        self.num_partitions = o.num_sparse_partition
        self.num_writer, self.num_reader = o.num_writer, o.num_reader
        self.q, self.k, self.v = (
            dense(d, n, rngs=rngs, dtype=dtype) for n in (key_dim, key_dim, value_dim)
        )
        r = self.head_v  # LoRA rank of the partition q2, k2 (fla: head_v_dim)
        self.lora_q, self.lora_k = (_low_rank(d, r, key_dim, rngs=rngs, dtype=dtype) for _ in "qk")
        rank = o.gate_low_rank_dim
        # GLA gates: shared path, partitions.
        self.gates = nnx.List(
            [_low_rank(d, rank, key_dim, rngs=rngs, dtype=dtype, bias=True) for _ in range(2)]
        )
        # The router runs in fp32: top-k decisions should not flip with the compute dtype.
        self.router = dense(d, o.num_sparse_partition, rngs=rngs, dtype=_F32)
        convs = [ShortConv(key_dim, o.conv_size, rngs=rngs, dtype=dtype) for _ in range(2)]
        self.convs = nnx.List(convs) if o.use_short_conv else None
        self.norm = rms_norm(r, rngs=rngs, dtype=dtype)
        self.out_gate = (
            _low_rank(d, r, value_dim, rngs=rngs, dtype=dtype) if o.use_output_gate else None
        )
        self.out = dense(value_dim, d, rngs=rngs, dtype=dtype)
        self.use_q_softmax, self.use_k_softmax = o.use_q_softmax, o.use_k_softmax
        self.tau = o.gate_logit_normalizer
        self.aux_loss_coef = o.aux_loss_coef
        self.chunk_size = cfg.chunk_size

    def init_cache(self, batch: int, max_len: int) -> dict:
        """Z + 1 states per head [B, (Z+1) H, K, V] fp32 (shared first), conv tails, position."""
        heads = (self.num_partitions + 1) * self.num_heads
        conv = None if self.convs is None else [c.init_cache(batch) for c in self.convs]
        return {
            "state": jnp.zeros((batch, heads, self.head_k, self.head_v), _F32),
            "conv": conv,
            "pos": jnp.zeros((), jnp.int32),
        }

    def route(self, x_BTD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Router weights e [B, T, Z] fp32 and the writer / reader masks (top-k of e, 0/1 fp32).

        Ties go to the lower partition index (`lax.top_k`), as in fla's kernel."""
        e_BTZ = jax.nn.softmax(self.router(x_BTD.astype(_F32)), axis=-1)
        n = self.num_partitions

        def top(k: int) -> jax.Array:
            _, top_idx = jax.lax.top_k(jax.lax.stop_gradient(e_BTZ), k)
            return jax.nn.one_hot(top_idx, n, dtype=_F32).sum(axis=-2)

        return e_BTZ, top(self.num_writer), top(self.num_reader)

    def aux_loss(self, x_BTD: jax.Array, mask_BT: jax.Array | None = None) -> jax.Array:
        """Load-balancing loss (Z / k_w) sum_i mean_t(e_ti) mean_t(1[i in W_t]) of this layer's
        input x (fla's writer-only loss; 1 when balanced). Scale it by `aux_loss_coef`.

        `mask_BT` (1 = real token) restricts the means to real tokens, e.g. to skip padding."""
        e_BTZ, w_BTZ, _ = self.route(x_BTD)
        m_BT1 = jnp.ones(e_BTZ.shape[:2] + (1,), _F32) if mask_BT is None else mask_BT[..., None]
        count = jnp.maximum(m_BT1.sum(), 1.0)
        p_Z = (e_BTZ * m_BT1).sum(axis=(0, 1)) / count
        f_Z = (w_BTZ * m_BT1).sum(axis=(0, 1)) / count
        return self.num_partitions / self.num_writer * jnp.sum(p_Z * f_Z)

    def features(self, x_BTD: jax.Array, segment_ids=None, conv_cache=None):
        """(q1, q2, k1, k2 [B, T, H, K], v [B, T, H, V], log-gates g1, g2 [B, T, H, K] fp32,
        new conv cache)."""
        b, t, _ = x_BTD.shape
        q1, k1 = self.q(x_BTD), self.k(x_BTD)
        q2 = q1 + _apply(self.lora_q, x_BTD)
        k2 = k1 + _apply(self.lora_k, x_BTD)
        if self.convs is not None:
            if conv_cache is None:
                q1, k1 = (c(y, segment_ids) for c, y in zip(self.convs, (q1, k1), strict=True))
            else:
                (q1, tq), (k1, tk) = (
                    c.extend(y, w) for c, y, w in zip(self.convs, (q1, k1), conv_cache, strict=True)
                )
                conv_cache = [tq, tk]

        def heads(y):
            return y.reshape(b, t, self.num_heads, -1)

        q1, q2, k1, k2 = map(heads, (q1, q2, k1, k2))
        v = heads(jax.nn.silu(self.v(x_BTD)))

        def softmax(y):
            return jax.nn.softmax(y.astype(_F32), axis=-1).astype(y.dtype)

        q1, q2 = map(softmax if self.use_q_softmax else jax.nn.silu, (q1, q2))
        k1, k2 = map(softmax if self.use_k_softmax else jax.nn.silu, (k1, k2))
        g1, g2 = (
            heads(jax.nn.log_sigmoid(_apply(gate, x_BTD).astype(_F32)) / self.tau)
            for gate in self.gates
        )
        return q1, q2, k1, k2, v, g1, g2, conv_cache

    def output(self, o_BTHV: jax.Array, x_BTD: jax.Array) -> jax.Array:
        """Per-head RMSNorm, times SiLU of the low-rank output gate, then W_o."""
        b, t, _, _ = o_BTHV.shape
        y_BTD = self.norm(o_BTHV).reshape(b, t, -1)
        if self.out_gate is not None:
            y_BTD = y_BTD * jax.nn.silu(_apply(self.out_gate, x_BTD))
        return self.out(y_BTD)

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        b, t, _ = x_BTD.shape
        q1, q2, k1, k2, v, g1, g2, conv = self.features(x_BTD, segment_ids, cache and cache["conv"])
        e_BTZ, w_BTZ, r_BTZ = self.route(x_BTD)
        dtype = q1.dtype

        def expand(y, m_BTZ):  # [B, T, H, K or V] x [B, T, Z] -> [B, T, Z, H, K or V]
            return y[:, :, None] * m_BTZ[:, :, :, None, None].astype(y.dtype)

        parts = (
            expand(q2, (e_BTZ * r_BTZ).astype(dtype)),
            expand(k2, (e_BTZ * w_BTZ).astype(dtype)),
            expand(v, w_BTZ.astype(dtype)),
            expand(g2, w_BTZ),  # log-gate 0: an unselected partition keeps its state
        )
        # Engine heads: (Z + 1) * H in (partition, head) order; block 0 is the shared path.
        q_BTHK, k_BTHK, v_BTHV, g_BTHK = (
            jnp.concatenate([y[:, :, None], p], axis=2).reshape(b, t, -1, y.shape[-1])
            for y, p in zip((q1, k1, v, g1), parts, strict=True)
        )
        o_BTHV, state = run_gla(
            q_BTHK,
            k_BTHK,
            v_BTHV,
            g_BTHK,
            state=cache and cache["state"],
            segment_ids=segment_ids,
            chunk_size=self.chunk_size,
        )
        # Sum the partition blocks back to H heads.
        o_BTHV = o_BTHV.reshape(b, t, self.num_partitions + 1, self.num_heads, -1).sum(axis=2)
        return self.output(o_BTHV, x_BTD), advance(cache, t, state=state, conv=conv)
