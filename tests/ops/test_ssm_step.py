"""Selective scan decode: stepping token by token == the chunked prefill, outputs and state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linmix.ops.ssm import selective_scan, selective_scan_step
from linmix.testing.numerics import rel_err
from linmix.testing.ssm import Bt, Dc, N, make_inputs

FP32_TOL = 1e-4


@jax.jit
def decode(p: dict, state: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """All tokens through the step function (under a lax.scan, so it compiles once)."""

    def step(h, xs):
        x_t, dt_t, B_t, C_t, z_t = xs
        return selective_scan_step(
            x_t, dt_t, p["A"], B_t, C_t, p["D"], z_t, h, dt_bias=p["dt_bias"]
        )[::-1]

    xs = tuple(jnp.moveaxis(p[k], 1, 0) for k in ("x", "dt", "B", "C", "z"))
    if state is None:
        state = jnp.zeros((Bt, Dc, N), jnp.float32)
    h, y_TBD = jax.lax.scan(step, state, xs)
    return jnp.moveaxis(y_TBD, 0, 1), h


@pytest.mark.parametrize("groups", [None, 2])
@pytest.mark.parametrize("strength", ["weak", "strong"])
def test_decode_steps_equal_chunked(groups: int | None, strength: str) -> None:
    p = make_inputs(37, groups=groups, strength=strength, seed=20)
    y, h = selective_scan(**p, output_final_state=True, chunk_size=16)
    y_dec, h_dec = decode(p, p["initial_state"])
    assert rel_err(y_dec, y) < FP32_TOL and rel_err(h_dec, h) < FP32_TOL


def test_prefill_then_decode_continues_the_sequence() -> None:
    """Prefill the first tokens with the chunked form, then step from its final state."""
    T, split = 40, 29
    p = make_inputs(T, seed=21)
    y, h = selective_scan(**p, output_final_state=True, chunk_size=16)
    seq = ("x", "dt", "B", "C", "z")
    head = {k: v[:, :split] if k in seq else v for k, v in p.items()}
    tail = {k: v[:, split:] if k in seq else v for k, v in p.items()}
    _, h_head = selective_scan(**head, output_final_state=True, chunk_size=16)
    y_tail, h_tail = decode(tail, h_head)
    assert rel_err(y_tail, y[:, split:]) < FP32_TOL and rel_err(h_tail, h) < FP32_TOL


def test_step_defaults_and_dtypes() -> None:
    """state=None is the zero state; the output keeps x_t's dtype, the state is fp32."""
    p = make_inputs(1, groups=None, skip=False, gate=False, seed=22)
    x, dt, B, C = (p[k][:, 0].astype(jnp.bfloat16) for k in ("x", "dt", "B", "C"))
    y, h = selective_scan_step(x, dt, p["A"], B, C)
    assert y.dtype == jnp.bfloat16 and h.dtype == jnp.float32 and h.shape == (Bt, Dc, N)
    y_seq, h_seq = selective_scan(
        x[:, None], dt[:, None], p["A"], B[:, None], C[:, None], output_final_state=True
    )
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(y_seq[:, 0], np.float32))
    assert rel_err(h, h_seq) < FP32_TOL


def _bad_steps() -> list[tuple[str, dict]]:
    x = jnp.ones((Bt, Dc))
    ok = dict(x_t=x, dt_t=x, A=-jnp.ones((Dc, N)), B_t=jnp.ones((Bt, N)), C_t=jnp.ones((Bt, N)))
    return [
        ("x rank", dict(ok, x_t=jnp.ones((Bt, 1, Dc)))),
        ("dt shape", dict(ok, dt_t=jnp.ones((Bt, Dc + 1)))),
        ("A shape", dict(ok, A=-jnp.ones((Dc + 1, N)))),
        ("A complex", dict(ok, A=-jnp.ones((Dc, N), jnp.complex64))),
        ("B shape", dict(ok, B_t=jnp.ones((Bt, N + 1)))),
        ("C shape", dict(ok, C_t=jnp.ones((Bt, 2, N)))),
        ("groups", dict(ok, B_t=jnp.ones((Bt, 4, N)), C_t=jnp.ones((Bt, 4, N)))),
        ("D shape", dict(ok, D=jnp.ones((Dc + 1,)))),
        ("z shape", dict(ok, z_t=jnp.ones((Bt, Dc, 1)))),
        ("dt_bias shape", dict(ok, dt_bias=jnp.ones((1, Dc)))),
        ("state shape", dict(ok, state=jnp.ones((Bt, N, Dc)))),
        ("state dtype", dict(ok, state=jnp.ones((Bt, Dc, N), jnp.int32))),
    ]


@pytest.mark.parametrize("case", _bad_steps(), ids=lambda c: c[0])
def test_step_validation_errors(case: tuple[str, dict]) -> None:
    with pytest.raises(ValueError):
        selective_scan_step(**case[1])
