"""Convolution mode of a diagonal LTI SSM (S4D): FFT convolution of the Vandermonde kernel ==
the recurrence == the direct O(T^2) causal convolution, forward and gradients."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linmix.ops.ssm import (
    causal_conv_reference,
    fft_conv,
    s4d_discretize,
    s4d_kernel,
    ssm_conv_reference,
)
from linmix.testing.numerics import rel_err

Bt, H, N = 2, 3, 4
FP32_TOL = 1e-4


def make_params(T: int, *, complex_A: bool, seed: int = 0) -> dict[str, jax.Array]:
    """S4D-Lin (A_n = -1/2 + i pi n) or S4D-Real (A_n = -(n + 1)) with a little noise, dt in
    [1e-2, 2e-1] (a long memory next to T), complex C, real B and D."""
    rng = np.random.default_rng(seed)
    n = np.arange(N)[None, :]
    if complex_A:
        A = -0.5 + 1j * np.pi * n + 0.05 * rng.normal(size=(H, N))
        C = rng.normal(size=(H, N)) + 1j * rng.normal(size=(H, N))
        A, C = jnp.asarray(A, jnp.complex64), jnp.asarray(C, jnp.complex64)
    else:
        A = jnp.asarray(-(n + 1.0) * (1 + 0.1 * rng.uniform(size=(H, N))), jnp.float32)
        C = jnp.asarray(rng.normal(size=(H, N)), jnp.float32)
    return dict(
        u=jnp.asarray(rng.normal(size=(Bt, T, H)), jnp.float32),
        log_dt=jnp.asarray(rng.uniform(np.log(1e-2), np.log(2e-1), size=H), jnp.float32),
        A=A,
        B=jnp.asarray(rng.normal(size=(H, N)), jnp.float32),
        C=C,
        D=jnp.asarray(rng.normal(size=H), jnp.float32),
    )


def _fft_form(p, discretization):
    K = s4d_kernel(p["log_dt"], p["A"], p["B"], p["C"], p["u"].shape[1], discretization)
    return fft_conv(p["u"], K, p["D"])


def _direct_form(p, discretization):
    K = s4d_kernel(p["log_dt"], p["A"], p["B"], p["C"], p["u"].shape[1], discretization)
    return causal_conv_reference(p["u"], K, p["D"])


def _recurrent_form(p, discretization):
    return ssm_conv_reference(
        p["u"], p["log_dt"], p["A"], p["B"], p["C"], p["D"], discretization=discretization
    )


FORMS = {"fft": _fft_form, "direct": _direct_form, "recurrent": _recurrent_form}


@functools.partial(jax.jit, static_argnames=("discretization",))
def outputs_and_grads(p, ct, *, discretization):
    """{form: (y, gradients w.r.t. every parameter)} for all three forms, in one compile."""
    out = {}
    for name, form in FORMS.items():
        y, vjp = jax.vjp(lambda p, form=form: form(p, discretization), p)
        out[name] = (y, vjp(ct)[0])
    return out


def _parts(a: jax.Array) -> np.ndarray:
    """Real and imaginary parts side by side, so rel_err sees complex gradients whole."""
    a = np.asarray(a)
    return np.stack([a.real, a.imag]) if np.iscomplexobj(a) else a


def check_forms_agree(T: int, discretization: str, complex_A: bool) -> None:
    """Output and the gradients w.r.t. u, log_dt, A, B, C and D of the FFT and direct forms
    equal those of the recurrence."""
    p = make_params(T, complex_A=complex_A, seed=T)
    ct = jnp.asarray(np.random.default_rng(99).normal(size=(Bt, T, H)), jnp.float32)
    out = outputs_and_grads(p, ct, discretization=discretization)
    want_y, want_g = out["recurrent"]
    for form in ("fft", "direct"):
        y, g = out[form]
        assert np.isfinite(np.asarray(y)).all()
        assert rel_err(y, want_y) < FP32_TOL, (form, rel_err(y, want_y))
        for name in want_g:
            err = rel_err(_parts(g[name]), _parts(want_g[name]))
            assert err < FP32_TOL, (form, f"grad {name}", err)


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("T", [1, 7, 64, 200])
def test_fft_conv_equals_recurrence_and_direct_sum(T: int, discretization: str) -> None:
    """S4D-Lin (complex A) over lengths from one token to a few FFT sizes."""
    check_forms_agree(T, discretization, complex_A=True)


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_real_A_forms_agree(discretization: str) -> None:
    """S4D-Real (real A, real C): the same code with a zero imaginary part."""
    check_forms_agree(65, discretization, complex_A=False)


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_kernel_matches_float64_powers(discretization: str) -> None:
    """The kernel vs K_l = Re(sum_n C_n Abar_n^l Bbar_n) with NumPy float64 matrix powers."""
    p = make_params(1, complex_A=True, seed=3)
    L = 50
    K = s4d_kernel(p["log_dt"], p["A"], p["B"], p["C"], L, discretization=discretization)
    dtA = np.exp(np.asarray(p["log_dt"], np.float64))[:, None] * np.asarray(p["A"], np.complex128)
    B, C, A = (np.asarray(p[k], np.complex128) for k in ("B", "C", "A"))
    if discretization == "zoh":
        Abar, Bbar = np.exp(dtA), np.expm1(dtA) / A * B
    else:
        Abar = (1 + dtA / 2) / (1 - dtA / 2)
        Bbar = np.exp(np.asarray(p["log_dt"], np.float64))[:, None] / (1 - dtA / 2) * B
    want = np.stack([np.real(np.sum(C * Abar**lag * Bbar, axis=-1)) for lag in range(L)], axis=1)
    assert K.shape == (H, L) and K.dtype == jnp.float32
    assert rel_err(K, want) < 1e-5


def test_kernel_lengths_other_than_T() -> None:
    """A shorter kernel is zero past its end; taps of a longer one beyond T are unused."""
    T = 40
    p = make_params(T, complex_A=True, seed=4)
    K_long = s4d_kernel(p["log_dt"], p["A"], p["B"], p["C"], 64)
    want = causal_conv_reference(p["u"], K_long[:, :T], p["D"])
    assert rel_err(fft_conv(p["u"], K_long, p["D"]), want) < FP32_TOL
    K_short = K_long[:, :9]
    want = causal_conv_reference(p["u"], K_short)
    assert rel_err(fft_conv(p["u"], K_short), want) < FP32_TOL


def test_bilinear_negative_real_Abar() -> None:
    """Real A with dt A < -2 makes the bilinear Abar negative: its powers alternate in sign,
    which exp(l log Abar) with the complex log reproduces."""
    log_dt = jnp.zeros((1,), jnp.float32)
    A = jnp.asarray([[-3.0, -0.5]], jnp.float32)
    B = C = jnp.ones((1, 2), jnp.float32)
    Abar, _, _ = s4d_discretize(log_dt, A, B, discretization="bilinear")
    assert float(jnp.real(Abar[0, 0])) < 0
    u = jnp.asarray(np.random.default_rng(5).normal(size=(1, 30, 1)), jnp.float32)
    K = s4d_kernel(log_dt, A, B, C, 30, discretization="bilinear")
    want = ssm_conv_reference(u, log_dt, A, B, C, discretization="bilinear")
    assert rel_err(fft_conv(u, K), want) < FP32_TOL


def test_bf16_input_keeps_dtype() -> None:
    p = make_params(33, complex_A=True, seed=6)
    K = s4d_kernel(p["log_dt"], p["A"], p["B"], p["C"], 33)
    y = fft_conv(p["u"].astype(jnp.bfloat16), K, p["D"])
    assert y.dtype == jnp.bfloat16
    want = causal_conv_reference(p["u"].astype(jnp.bfloat16).astype(jnp.float32), K, p["D"])
    assert rel_err(y, want) < 1e-2


def _bad_calls() -> list[tuple[str, object]]:
    log_dt, A = jnp.zeros(H), -jnp.ones((H, N))
    u, K = jnp.ones((Bt, 8, H)), jnp.ones((H, 8))
    return [
        ("discretization", lambda: s4d_kernel(log_dt, A, A, A, 8, discretization="euler")),
        ("log_dt rank", lambda: s4d_kernel(log_dt[:, None], A, A, A, 8)),
        ("A shape", lambda: s4d_kernel(log_dt, A[:-1], A, A, 8)),
        ("B shape", lambda: s4d_kernel(log_dt, A, A[:, :-1], A, 8)),
        ("C shape", lambda: s4d_kernel(log_dt, A, A, A.T, 8)),
        ("length", lambda: s4d_kernel(log_dt, A, A, A, 0)),
        ("u rank", lambda: fft_conv(u[0], K)),
        ("kernel channels", lambda: fft_conv(u, K[:-1])),
        ("complex kernel", lambda: fft_conv(u, K.astype(jnp.complex64))),
        ("D shape", lambda: fft_conv(u, K, jnp.ones(H + 1))),
        ("empty u", lambda: fft_conv(u[:, :0], K)),
        ("reference u", lambda: ssm_conv_reference(u[..., :-1], log_dt, A, A, A)),
    ]


@pytest.mark.parametrize("case", _bad_calls(), ids=lambda c: c[0])
def test_validation_errors(case: tuple[str, object]) -> None:
    with pytest.raises(ValueError):
        case[1]()
