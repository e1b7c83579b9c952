"""Convolution mode of a time-invariant diagonal SSM (S4D; LSSL-style layers, docs/mixers.md).

Per channel h with a diagonal state of size M (complex or real A with negative real part):

    x'(s) = A x(s) + B u(s)              (continuous time, step dt = exp(log_dt))
    x_t = Abar x_{t-1} + Bbar u_t,       y_t = Re(C . x_t) + D u_t

    ZOH:       Abar = exp(dt A),                        Bbar = (exp(dt A) - 1) / A * B
    bilinear:  Abar = (1 + dt A / 2) / (1 - dt A / 2),  Bbar = dt / (1 - dt A / 2) * B

Being time-invariant, the recurrence unrolls to a causal convolution with the kernel

    K_l = Re(sum_n C_n Abar_n^l Bbar_n),     y_t = sum_{l <= t} K_l u_{t-l} + D u_t,

which `fft_conv` applies in O(T log T) with an FFT. The powers Abar^l are exp(l log Abar) (the
Vandermonde matrix), not repeated products: the error of exp(l z) does not compound with l, and
for ZOH log Abar = dt A exactly. Bbar uses expm1 so it stays accurate when dt A is tiny.

`ssm_conv_reference` (the recurrence, one `lax.scan` step per token) and `causal_conv_reference`
(the O(T^2) sum) are the oracles. All math is fp32 / complex64.

Suffix letters: B batch, T time, H channels, M state size, L kernel length.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_F32 = jnp.float32
_C64 = jnp.complex64
_HIGHEST = jax.lax.Precision.HIGHEST
DISCRETIZATIONS = ("zoh", "bilinear")


def s4d_discretize(
    log_dt: jax.Array,
    A: jax.Array,
    B: jax.Array,
    discretization: str = "zoh",
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(Abar, log Abar, Bbar), each [H, M] complex64, from log_dt [H] and A, B [H, M]."""
    _check_params(log_dt, A, B, None, discretization)
    dt_H1 = jnp.exp(log_dt.astype(_F32))[:, None]
    A_HM = A.astype(_C64)
    dtA_HM = dt_H1 * A_HM
    if discretization == "zoh":
        log_Abar_HN = dtA_HM
        Bbar_HM = jnp.expm1(dtA_HM) / A_HM * B.astype(_C64)
    else:
        # log((1 + z/2) / (1 - z/2)) as a difference of log1p's: accurate for small z, and the
        # principal complex log handles a negative real Abar (dt A < -2 with real A).
        log_Abar_HN = jnp.log1p(dtA_HM / 2) - jnp.log1p(-dtA_HM / 2)
        Bbar_HM = dt_H1 / (1 - dtA_HM / 2) * B.astype(_C64)
    return jnp.exp(log_Abar_HN), log_Abar_HN, Bbar_HM


def s4d_kernel(
    log_dt: jax.Array,
    A: jax.Array,
    B: jax.Array,
    C: jax.Array,
    length: int,
    discretization: str = "zoh",
) -> jax.Array:
    """Convolution kernel K [H, length] fp32, K_l = Re(sum_n C_n Abar_n^l Bbar_n).

    Args:
      log_dt: [H] log step sizes.
      A: [H, M] complex or real, negative real part.
      B, C: [H, M] complex or real.
      length: kernel length L (usually the sequence length).
      discretization: 'zoh' or 'bilinear'.

    Materialises the [H, M, L] complex Vandermonde matrix: mind H * M * L at long lengths.
    """
    _check_params(log_dt, A, B, C, discretization)
    if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    _, log_Abar_HN, Bbar_HM = s4d_discretize(log_dt, A, B, discretization)
    l_11L = jnp.arange(length, dtype=_F32)[None, None, :]
    vandermonde_HML = jnp.exp(log_Abar_HN[:, :, None] * l_11L)
    CB_HM = C.astype(_C64) * Bbar_HM
    K_HL = jnp.einsum("hn,hnl->hl", CB_HM, vandermonde_HML, precision=_HIGHEST)
    return jnp.real(K_HL)


def fft_conv(u: jax.Array, kernel: jax.Array, D: jax.Array | None = None) -> jax.Array:
    """Causal convolution y_t = sum_{l <= t} K_l u_{t-l} + D u_t via real FFTs, in fp32.

    Args:
      u: [B, T, H]. kernel: [H, L]; taps beyond T are unused and a shorter kernel is zero past L.
      D: [H] skip, or None.

    Returns:
      y [B, T, H] in u.dtype.
    """
    _check_conv(u, kernel, D)
    T = u.shape[1]
    K_HL = kernel.astype(_F32)[:, :T]
    # Zero-padding both to n >= 2T makes the circular convolution of the FFT a linear one, so
    # nothing from the end wraps around onto the start; a power of two is the fast FFT size.
    n = 1 << (2 * T - 1).bit_length()
    u_f = jnp.fft.rfft(u.astype(_F32), n=n, axis=1)
    K_f = jnp.fft.rfft(K_HL, n=n, axis=1).T[None]
    y_BTH = jnp.fft.irfft(u_f * K_f, n=n, axis=1)[:, :T]
    return _skip(y_BTH, u, D).astype(u.dtype)


def causal_conv_reference(u: jax.Array, kernel: jax.Array, D: jax.Array | None = None) -> jax.Array:
    """The O(T^2) direct sum of `fft_conv` through a Toeplitz matrix (oracle). [B, T, H]."""
    _check_conv(u, kernel, D)
    T = u.shape[1]
    L = kernel.shape[1]
    lag_TS = jnp.arange(T)[:, None] - jnp.arange(T)[None, :]
    valid_TS = (lag_TS >= 0) & (lag_TS < L)
    K_HTS = jnp.where(valid_TS[None], kernel.astype(_F32)[:, jnp.clip(lag_TS, 0, L - 1)], 0.0)
    y_BTH = jnp.einsum("hts,bsh->bth", K_HTS, u.astype(_F32), precision=_HIGHEST)
    return _skip(y_BTH, u, D).astype(u.dtype)


def ssm_conv_reference(
    u: jax.Array,
    log_dt: jax.Array,
    A: jax.Array,
    B: jax.Array,
    C: jax.Array,
    D: jax.Array | None = None,
    *,
    discretization: str = "zoh",
) -> jax.Array:
    """The recurrence x_t = Abar x_{t-1} + Bbar u_t, y_t = Re(C . x_t) + D u_t, one `lax.scan`
    step per token from x_0 = 0 (oracle for the convolution). u [B, T, H] -> y [B, T, H]."""
    _check_params(log_dt, A, B, C, discretization)
    _check_input(u, log_dt.shape[0], D)
    Abar_HM, _, Bbar_HM = s4d_discretize(log_dt, A, B, discretization)
    C_HM = C.astype(_C64)

    def step(x_BHM: jax.Array, u_BH: jax.Array) -> tuple[jax.Array, jax.Array]:
        x_BHM = Abar_HM[None] * x_BHM + Bbar_HM[None] * u_BH[:, :, None]
        return x_BHM, jnp.real(jnp.sum(C_HM[None] * x_BHM, axis=-1))

    x0_BHM = jnp.zeros((u.shape[0], *A.shape), _C64)
    _, y_TBH = jax.lax.scan(step, x0_BHM, jnp.moveaxis(u.astype(_F32), 1, 0))
    return _skip(jnp.moveaxis(y_TBH, 0, 1), u, D).astype(u.dtype)


def _skip(y_BTH: jax.Array, u_BTH: jax.Array, D: jax.Array | None) -> jax.Array:
    if D is None:
        return y_BTH
    return y_BTH + D.astype(_F32)[None, None] * u_BTH.astype(_F32)


def _check_params(
    log_dt: jax.Array, A: jax.Array, B: jax.Array, C: jax.Array | None, discretization: str
) -> None:
    """Static checks of the SSM parameters (the sign of Re A can't be checked under jit)."""
    if discretization not in DISCRETIZATIONS:
        raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {discretization!r}")
    if log_dt.ndim != 1:
        raise ValueError(f"log_dt must have rank 1 [H], got shape {log_dt.shape}")
    H = log_dt.shape[0]
    if A.ndim != 2 or A.shape[0] != H:
        raise ValueError(f"A must be [H, M] with H = {H}, got shape {A.shape}")
    for name, p in (("B", B), ("C", C)):
        if p is not None and p.shape != A.shape:
            raise ValueError(f"{name} must have the shape of A {A.shape} ([H, M]), got {p.shape}")


def _check_conv(u: jax.Array, kernel: jax.Array, D: jax.Array | None) -> None:
    if kernel.ndim != 2:
        raise ValueError(f"kernel must have rank 2 [H, L], got shape {kernel.shape}")
    if not jnp.issubdtype(kernel.dtype, jnp.floating):
        raise ValueError(f"kernel must be real (take Re of a complex kernel), got {kernel.dtype}")
    _check_input(u, kernel.shape[0], D)


def _check_input(u: jax.Array, H: int, D: jax.Array | None) -> None:
    if u.ndim != 3 or u.shape[2] != H:
        raise ValueError(f"u must be [B, T, H] with H = {H}, got shape {u.shape}")
    if u.shape[1] < 1:
        raise ValueError(f"u must have at least one time step, got shape {u.shape}")
    if D is not None and D.shape != (H,):
        raise ValueError(f"D must be [H] = ({H},), got {D.shape}")
