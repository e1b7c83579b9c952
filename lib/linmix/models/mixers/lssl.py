"""LSSL (Gu et al. 2021, "Combining Recurrent, Convolutional, and Continuous-time Models with
Linear State-Space Layers") with a diagonal state (S4D). Engine: time-invariant diagonal SSM,
chunked convolution form (or the FFT convolution); decode by the diagonal recurrence.

Per model channel d (D = d_model) and state mode m: x'(s) = A x(s) + B u(s), discretised with step
dt_d (`linmix.ops.ssm.s4d_discretize`, bilinear as in LSSL or ZOH as in S4D) to

    x_t = Abar x_{t-1} + Bbar u_t,    y_t = Re(C . x_t) + D u_t,    out = GELU(y) W_out,

i.e. the causal convolution y = K * u + D u with K_l = Re(sum_m C_m Abar_m^l Bbar_m). The layer
follows LSSL's `lssl.yaml` (channels 1, GELU, output linear "ff"), with its dense HiPPO-LegS A
replaced by the S4D-LegS diagonal (eigenvalues of the normal part of HiPPO-LegS, B rotated into its
eigenbasis; docs/mixers.md#lssl), so a step costs O(M) instead of O(M^2). Complex modes come in
conjugate pairs: `state_size` modes stand for a real state of twice that order, and C carries
each pair's factor 2.

Forms. "chunked" (default): inside chunks of `chunk_size` a Toeplitz product with the kernel of
`s4d_kernel` (masked to the document of each token), across chunks the diagonal state, carried
in complex64 and reset where the document changes. It is exactly causal (an FFT leaks ~1e-8
gradients from the future) and exact for packed segments (the masked Toeplitz blocks then take
B*T*D*chunk_size floats). "fft": `fft_conv` with the full-length kernel; it mixes packed
documents, so calls with segment_ids or a cache use the chunked form.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from linmix.models.layers import dense
from linmix.models.mixers.base import Mixer, Options
from linmix.models.mixers.common import advance
from linmix.ops.ssm import DISCRETIZATIONS, fft_conv, s4d_discretize, s4d_kernel

_F32, _C64 = jnp.float32, jnp.complex64
_HIGHEST = jax.lax.Precision.HIGHEST
INITS = ("legs", "lin", "real")
FORMS = ("chunked", "fft")


@dataclasses.dataclass(frozen=True)
class LSSLOptions(Options):
    state_size: int = 128  # M complex modes per channel: LSSL's state order 256, halved by pairs
    init: str = "legs"  # LSSL `init legs`; 'lin' / 'real': S4D-Lin / S4D-Real
    discretization: str = "bilinear"  # LSSL's GBT with alpha = 1/2; 'zoh' as in S4D
    dt_min: float = 1e-3  # log dt ~ U[log dt_min, log dt_max] per channel (LSSL config)
    dt_max: float = 1e-1
    form: str = "chunked"  # or 'fft' (whole sequences without segment_ids)


def init_modes(init: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) [n] complex128: the S4D initialisations of a diagonal state with n modes."""
    q = np.arange(n, dtype=np.float64)
    if init == "real":
        return -(q + 1) + 0j, np.ones(n, complex)
    if init == "lin":
        return -0.5 + 1j * np.pi * q, np.ones(n, complex)
    # HiPPO-LegS (order 2n) plus its rank-1 correction is -1/2 I + a skew-symmetric S; the
    # eigenvalues of S are imaginary pairs: keep one of each, and B_legs in the eigenbasis.
    i = np.arange(2 * n)
    r = np.sqrt(2 * i + 1.0)
    skew = -0.5 * np.outer(r, r) * np.sign(np.subtract.outer(i, i))  # -1/2 r_i r_j below diag
    w, V = np.linalg.eigh(-1j * skew)  # skew = V diag(i w) V^H
    keep = np.argsort(w)[:n]
    return -0.5 + 1j * w[keep], V[:, keep].conj().T @ r


def lti_chunked(u_BTH, log_dt, A, B, C, disc, chunk, *, seg_BT=None, x0_BHN=None):
    """(y [B, T, D] fp32 without the D term, state after the last token [B, D, M] complex64).

    Chunk n (positions r = 0..L-1) reads X_{n-1}, the state before it: y_r = (Toeplitz(K) u)_r
    + Re(C Abar^(r+1) X_{n-1}); then X_n = Abar^L X_{n-1} + sum_s Abar^(L-1-s) Bbar u_s. With
    `seg` a token sees only keys and carried states of its own document.
    """
    b, t, nh = u_BTH.shape
    L = chunk
    nc = -(-t // L)
    _, log_a_DM, bbar_DM = s4d_discretize(log_dt, A, B, disc)
    c_DM = C.astype(_C64)
    pos_C = jnp.arange(L)
    lag_RS = pos_C[:, None] - pos_C[None, :]
    K_DU = s4d_kernel(log_dt, A, B, C, L, disc)
    toep_DRS = jnp.where(lag_RS[None] >= 0, K_DU[:, jnp.clip(lag_RS, 0, L - 1)], 0.0)
    # Zero inputs past the end add nothing; the final state is read at the last real token.
    u_BNCD = jnp.pad(u_BTH.astype(_F32), ((0, 0), (0, nc * L - t), (0, 0))).reshape(b, nc, L, nh)
    if seg_BT is not None:
        seg_BNC = jnp.pad(seg_BT, ((0, 0), (0, nc * L - t)), mode="edge").reshape(b, nc, L)
        toep_BNDRS = toep_DRS[None, None] * (
            seg_BNC[:, :, None, :, None] == seg_BNC[:, :, None, None, :]
        )
        y_BNCD = jnp.einsum("bnhrs,bnsh->bnrh", toep_BNDRS, u_BNCD, precision=_HIGHEST)
        end_BN = seg_BNC[:, :, -1]
        u_end_BNCD = u_BNCD * (seg_BNC == end_BN[..., None])[..., None]
    else:
        y_BNCD = jnp.einsum("hrs,bnsh->bnrh", toep_DRS, u_BNCD, precision=_HIGHEST)
        u_end_BNCD = u_BNCD
    w_end_DMC = bbar_DM[..., None] * jnp.exp(log_a_DM[..., None] * (L - 1 - pos_C)[None, None])
    x_BNDM = jnp.einsum("hks,bnsh->bnhk", w_end_DMC, u_end_BNCD.astype(_C64), precision=_HIGHEST)
    decay_BNDM = jnp.broadcast_to(jnp.exp(L * log_a_DM), x_BNDM.shape)
    if seg_BT is not None:  # the carried state survives only inside one document
        same_BN = jnp.pad(end_BN[:, 1:] == end_BN[:, :-1], ((0, 0), (1, 0)))
        decay_BNDM = decay_BNDM * same_BN[..., None, None]
    x0 = jnp.zeros((b, nh, A.shape[1]), _C64) if x0_BHN is None else x0_BHN.astype(_C64)
    x_BNDM = x_BNDM.at[:, 0].add(decay_BNDM[:, 0] * x0)

    def combine(e1, e2):
        return e1[0] * e2[0], e2[0] * e1[1] + e2[1]

    _, x_BNDM = jax.lax.associative_scan(combine, (decay_BNDM, x_BNDM), axis=1)
    prev_BNDM = jnp.concatenate([x0[:, None], x_BNDM[:, :-1]], axis=1)
    read_DMC = c_DM[..., None] * jnp.exp(log_a_DM[..., None] * (pos_C + 1)[None, None])
    y_in = jnp.real(jnp.einsum("hkr,bnhk->bnrh", read_DMC, prev_BNDM, precision=_HIGHEST))
    if seg_BT is not None:  # tokens whose document starts inside the chunk ignore X_{n-1}
        prev_end_BN = jnp.pad(end_BN[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
        y_in = y_in * (seg_BNC == prev_end_BN[..., None])[..., None]
    y_BTD = (y_BNCD + y_in).reshape(b, nc * L, nh)[:, :t]
    r = t - 1 - (nc - 1) * L  # the last token's place in the last chunk
    w_fin_DMC = bbar_DM[..., None] * jnp.exp(
        log_a_DM[..., None] * jnp.maximum(r - pos_C, 0)[None, None]
    )
    x_fin = jnp.exp((r + 1) * log_a_DM)[None] * prev_BNDM[:, -1]
    x_fin = x_fin + jnp.einsum("hks,bsh->bhk", w_fin_DMC, u_BNCD[:, -1].astype(_C64))
    return y_BTD, x_fin


class LSSL(Mixer, nnx.Module):
    """Linear state-space layer, LSSL (Gu, Johnson, Goel, Saab, Dao, Rudra & Ré, NeurIPS 2021,
    arXiv:2110.13985), with the diagonal state of S4D (Gu, Gupta, Goel & Ré, NeurIPS 2022,
    arXiv:2206.11893).

    Time-invariant SSM in convolution mode (`linmix.ops.ssm.s4d_kernel`, `fft_conv`): per model
    channel, M complex diagonal modes discretised with a learned step give a causal convolution
    y = K * u + D u; the output is GELU(y) followed by a linear layer. Causal: decodes by the
    diagonal recurrence from a fixed-size cache (the complex state).

    Options (defaults of the paper's config; num_heads is not used, one SSM per channel):
        state_size (128): M complex modes per channel (a real state of order 2 M).
        init ("legs"): "legs" (S4D-LegS, from HiPPO-LegS), "lin" (S4D-Lin) or "real" (S4D-Real).
        discretization ("bilinear"): "bilinear" (LSSL) or "zoh" (zero-order hold, S4D).
        dt_min (1e-3), dt_max (0.1): the step starts log-uniform in [dt_min, dt_max].
        form ("chunked"): "chunked", an exact Toeplitz product inside chunks with the state
            carried across them, or "fft" for whole sequences (calls with segment_ids or a cache
            use the chunked form).
    """

    name = "lssl"
    Options = LSSLOptions

    @classmethod
    def check(cls, cfg, opts: LSSLOptions) -> None:
        for field, value, allowed in (
            ("init", opts.init, INITS),
            ("discretization", opts.discretization, DISCRETIZATIONS),
            ("form", opts.form, FORMS),
        ):
            if value not in allowed:
                raise ValueError(f"mixer 'lssl': {field} {value!r} not in {allowed}")
        if opts.state_size < 1 or not 0 < opts.dt_min <= opts.dt_max:
            raise ValueError(
                f"mixer 'lssl': need state_size >= 1 and 0 < dt_min <= dt_max, got "
                f"state_size={opts.state_size}, dt_min={opts.dt_min}, dt_max={opts.dt_max}"
            )

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        o = self.options_from(cfg)
        dtype = self.compute_dtype(cfg)
        self.channels = h = cfg.d_model
        self.state_size = n = o.state_size
        self.discretization, self.form = o.discretization, o.form
        self.chunk_size = cfg.chunk_size
        lo, hi = math.log(o.dt_min), math.log(o.dt_max)
        self.log_dt = nnx.Param(jax.random.uniform(rngs.params(), (h,), minval=lo, maxval=hi))
        a, bb = init_modes(o.init, n)
        tile = lambda v: jnp.asarray(np.broadcast_to(v, (h, n)), _F32)
        self.log_neg_a_re = nnx.Param(tile(np.log(-a.real)))  # Re A = -exp(.) < 0: stable
        self.complex = o.init != "real"
        self.a_im = nnx.Param(tile(a.imag)) if self.complex else None
        self.b_re = nnx.Param(tile(bb.real))
        self.b_im = nnx.Param(tile(bb.imag)) if self.complex else None
        c_std = math.sqrt(0.5) if self.complex else 1.0
        self.c = nnx.Param(
            c_std * jax.random.normal(rngs.params(), (2 if self.complex else 1, h, n))
        )
        self.D = nnx.Param(jnp.ones((h,), _F32))
        self.out = dense(h, cfg.d_model, rngs=rngs, dtype=dtype)

    def ssm(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(A, B, C) [D, M]: complex64 (C doubled for the conjugate modes), or real fp32."""
        a_re = -jnp.exp(self.log_neg_a_re[...])
        if not self.complex:
            return a_re, self.b_re[...], self.c[...][0]
        c = self.c[...]
        return (
            jax.lax.complex(a_re, self.a_im[...]),
            jax.lax.complex(self.b_re[...], self.b_im[...]),
            2 * jax.lax.complex(c[0], c[1]),
        )

    def init_cache(self, batch: int, max_len: int) -> dict:
        """Diagonal state x [B, D, M] complex64 (imaginary part 0 for the real init), position."""
        x = jnp.zeros((batch, self.channels, self.state_size), _C64)
        return {"state": x, "pos": jnp.zeros((), jnp.int32)}

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        t = x_BTD.shape[1]
        A, B, C = self.ssm()
        log_dt, disc, u_BTD = self.log_dt[...], self.discretization, x_BTD.astype(_F32)
        state = None
        if cache is not None and t == 1:  # the recurrence, one token
            abar_DM, _, bbar_DM = s4d_discretize(log_dt, A, B, disc)
            state = abar_DM[None] * cache["state"] + bbar_DM[None] * u_BTD[:, 0, :, None].astype(
                _C64
            )
            y_BTD = jnp.real(jnp.sum(C.astype(_C64)[None] * state, axis=-1))[:, None]
        elif cache is None and segment_ids is None and self.form == "fft":
            y_BTD = fft_conv(u_BTD, s4d_kernel(log_dt, A, B, C, t, disc))
        else:
            y_BTD, state = lti_chunked(
                u_BTD,
                log_dt,
                A,
                B,
                C,
                disc,
                self.chunk_size,
                seg_BT=segment_ids,
                x0_BHN=cache and cache["state"],
            )
        y_BTD = jax.nn.gelu(y_BTD + self.D[...][None, None] * u_BTD, approximate=False)
        return self.out(y_BTD.astype(x_BTD.dtype)), advance(cache, t, state=state)
