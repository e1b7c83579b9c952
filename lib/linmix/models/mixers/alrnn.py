"""AL-RNN (Brenner, Hemmer, Monfared & Durstewitz 2024), almost-linear RNN. Nonlinear
(piecewise-linear) recurrence, sequential `lax.scan`; no engine applies.

The published model is an autonomous latent dynamical system (docs/mixers.md#alrnn),

    z_t = A * z_{t-1} + W Phi*(z_{t-1}) + h,    Phi*(z) = [z_1, ..., z_{M-P}, ReLU(z_{M-P+1:M})],

with a diagonal A, only the last P of the M latents rectified, observations read as the first N
latents and, in training, forced into them every tau steps (sparse teacher forcing).

As a sequence mixer layer, each of H heads runs one such AL-RNN with M latents, driven by the
projected tokens instead of by teacher forcing:

    u_t = x_t W_in (per head, M),    z_t = A * z_{t-1} + W Phi*(z_{t-1}) + h + u_t,
    y_t = concat_h(z_t) W_out.

The additive drive u_t is the external-input term of the PLRNN family the AL-RNN belongs to; it
anchors the latents to the data at every step, the role teacher forcing plays for the
autonomous model, so no forcing is applied. The identity observation model becomes a learned
linear read-out of all latents. Every document starts from z_0 = 0 (packed segments reset the
state), and the decode cache holds z. Phi* makes the map non-associative, so the whole
sequence runs as a per-token `lax.scan` in fp32 (O(T) sequential steps of O(H M^2)).

Defaults: M = 20 latents with P = 2 rectified units (the Lorenz-63 setting of the official
DurstewitzLab/ALRNN-DSR); A = diag(K) / lambda_max(K) with K = R^T R / M + I, R standard normal,
W ~ N(0, 0.01^2), h = 0, as in its `AL_RNN.initialize_AWh_random`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from linmix.models.layers import dense
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.common import advance

_F32 = jnp.float32
_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class ALRNNOptions(Options):
    latent_dim: int = 20  # M latents per head (ALRNN-DSR `settings/lorenz63.json`)
    pwl_units: int = 2  # P of them rectified (the piecewise-linear units)


def init_diagonal(key: jax.Array, m: int) -> jax.Array:
    """diag(K) / lambda_max(K) for K = R^T R / M + I: a positive diagonal in (0, 1]."""
    r = jax.random.normal(key, (m, m), _F32)
    k = r.T @ r / m + jnp.eye(m, dtype=_F32)
    return jnp.diagonal(k) / jnp.linalg.eigvalsh(k)[-1]


def alrnn_scan(
    u_BTHM: jax.Array,
    A_HM: jax.Array,
    W_HMM: jax.Array,
    h_HM: jax.Array,
    pwl_units: int,
    *,
    start_BT: jax.Array | None = None,
    z0_BHM: jax.Array | None = None,
) -> jax.Array:
    """Latents z [B, T, H, M] fp32 of z_t = A z_{t-1} + W Phi*(z_{t-1}) + h + u_t.

    z_{t-1} is zero before the first token (or `z0`) and wherever `start` marks a document start.
    """
    b, t, nh, m = u_BTHM.shape
    relu_M = jnp.arange(m) >= m - pwl_units  # the last P latents are rectified
    z0 = jnp.zeros((b, nh, m), _F32) if z0_BHM is None else z0_BHM.astype(_F32)
    start = jnp.zeros((b, t), bool) if start_BT is None else start_BT
    A, W, hb = A_HM.astype(_F32), W_HMM.astype(_F32), h_HM.astype(_F32)

    def step(z_BHM, inputs):
        u_BHM, start_B = inputs
        z_BHM = jnp.where(start_B[:, None, None], 0.0, z_BHM)
        phi_BHM = jnp.where(relu_M[None, None], jax.nn.relu(z_BHM), z_BHM)
        wz_BHM = jnp.einsum("bhj,hij->bhi", phi_BHM, W, precision=_HIGHEST)
        z_BHM = A[None] * z_BHM + wz_BHM + hb[None] + u_BHM
        return z_BHM, z_BHM

    xs = (jnp.moveaxis(u_BTHM.astype(_F32), 1, 0), jnp.moveaxis(start, 1, 0))
    _, z_TBHM = jax.lax.scan(step, z0, xs)
    return jnp.moveaxis(z_TBHM, 0, 1)


class ALRNN(Mixer, nnx.Module):
    """Almost-linear RNN, AL-RNN (Brenner, Hemmer, Monfared & Durstewitz, NeurIPS 2024,
    arXiv:2410.14240).

    No engine: a piecewise-linear recurrence run as a sequential per-token `lax.scan` in fp32.
    Each head is one AL-RNN with M latents, z_t = A * z_{t-1} + W Phi(z_{t-1}) + h + u_t, where
    Phi rectifies only the last P latents and u_t = x_t W_in drives the published autonomous
    model from the tokens; the latents of all heads are read out by one linear map. Causal:
    decodes from a fixed-size cache (the latents z).

    Options (defaults of the official Lorenz-63 setting):
        latent_dim (20): M, latents per head.
        pwl_units (2): P, how many of them are rectified (the piecewise-linear units).
        num_heads: number of AL-RNNs; see `Mixer`.
    """

    name = "alrnn"
    Options = ALRNNOptions

    @classmethod
    def check(cls, cfg, opts: ALRNNOptions) -> None:
        if opts.num_heads is not None and opts.num_heads < 1:
            raise ValueError(f"mixer 'alrnn': num_heads must be >= 1, got {opts.num_heads}")
        if opts.latent_dim < 1 or not 0 <= opts.pwl_units <= opts.latent_dim:
            raise ValueError(
                f"mixer 'alrnn': need latent_dim >= 1 and 0 <= pwl_units <= latent_dim, got "
                f"latent_dim={opts.latent_dim}, pwl_units={opts.pwl_units}"
            )

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.options_from(cfg)
        dtype = self.compute_dtype(cfg)
        self.num_heads = h = o.num_heads or cfg.num_heads
        self.latent_dim = m = o.latent_dim
        self.pwl_units = o.pwl_units
        self.in_proj = dense(cfg.d_model, h * m, rngs=rngs, dtype=dtype)
        keys = jax.random.split(rngs.params(), h)
        self.A = nnx.Param(jax.vmap(init_diagonal, in_axes=(0, None))(keys, m))
        self.W = nnx.Param(0.01 * jax.random.normal(rngs.params(), (h, m, m), _F32))
        self.h = nnx.Param(jnp.zeros((h, m), _F32))
        self.out_proj = dense(h * m, cfg.d_model, rngs=rngs, dtype=dtype)

    def init_cache(self, batch: int, max_len: int) -> dict:
        """Latents z [B, H, M] fp32 (zero before the first token) and the next position."""
        z = jnp.zeros((batch, self.num_heads, self.latent_dim), _F32)
        return {"state": z, "pos": jnp.zeros((), jnp.int32)}

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        b, t, _ = x_BTD.shape
        u_BTHM = self.in_proj(x_BTD).reshape(b, t, self.num_heads, self.latent_dim)
        start_BT = None
        if segment_ids is not None:
            start_BT = jnp.pad(segment_ids[:, 1:] != segment_ids[:, :-1], ((0, 0), (1, 0)))
        z_BTHM = alrnn_scan(
            u_BTHM,
            self.A[...],
            self.W[...],
            self.h[...],
            self.pwl_units,
            start_BT=start_BT,
            z0_BHM=cache and cache["state"],
        )
        y_BTD = self.out_proj(z_BTHM.reshape(b, t, -1).astype(x_BTD.dtype))
        return y_BTD, advance(cache, t, state=z_BTHM[:, -1])
