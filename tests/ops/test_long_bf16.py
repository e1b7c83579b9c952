"""Numerics at length: engine Δ (gated, strong decays, saturated betas) and the selective scan
(strong decays) in bf16 at T = 65536, reduced width: finite, and close to the fp32 per-token
oracle (engine L's bf16 T = 65536 test lives in test_gla_properties.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linmix.ops.delta import delta_rule
from linmix.ops.ssm import selective_scan
from linmix.testing.numerics import rel_err
from linmix.testing.ssm import random_problem as ssm_problem

T = 65536
BF16_TOL = 2e-2  # bf16 inputs and outputs, fp32 accumulation


def _finite(x) -> bool:
    return bool(np.isfinite(np.asarray(x, np.float32)).all())


@pytest.mark.parametrize("strength", [1e-3, 20.0])
def test_delta_rule_bf16_at_65536(strength: float):
    rng = np.random.default_rng(0)
    B, H, K, V = 1, 1, 8, 8
    q, k = (jnp.asarray(rng.normal(size=(B, T, H, K)), jnp.float32) for _ in range(2))
    v = jnp.asarray(rng.normal(size=(B, T, H, V)), jnp.float32)
    beta = jnp.asarray(rng.uniform(0.9, 1.0, size=(B, T, H)), jnp.float32)  # near-saturated
    g = jnp.asarray(-strength * rng.uniform(0.05, 1.5, size=(B, T, H)), jnp.float32)
    S0 = jnp.asarray(rng.normal(size=(B, H, K, V)), jnp.float32)
    kw = dict(initial_state=S0, output_final_state=True, use_qk_l2norm=True)
    want_o, want_S = jax.jit(lambda *a: delta_rule(*a, implementation="reference", **kw))(
        q, k, v, beta, g
    )
    bf16 = [x.astype(jnp.bfloat16) for x in (q, k, v, beta, g)]
    o, S = jax.jit(lambda *a: delta_rule(*a, chunk_size=64, **kw))(*bf16)
    assert o.dtype == jnp.bfloat16 and _finite(o) and _finite(S)
    assert rel_err(o, want_o) < BF16_TOL and rel_err(S, want_S) < BF16_TOL


def test_selective_scan_bf16_at_65536():
    p, _ = ssm_problem(np.random.default_rng(1), 1, T, 4, 4, None, log_delta=1.5)
    ref = jax.jit(
        lambda p: selective_scan(**p, output_final_state=True, implementation="reference")
    )
    want_y, want_h = ref(p)
    bf16 = {n: (x.astype(jnp.bfloat16) if n not in ("A", "initial_state") else x)
            for n, x in p.items()}  # fmt: skip
    y, h = jax.jit(lambda p: selective_scan(**p, output_final_state=True, chunk_size=64))(bf16)
    assert y.dtype == jnp.bfloat16 and _finite(y) and _finite(h)
    assert rel_err(y, want_y) < BF16_TOL and rel_err(h, want_h) < BF16_TOL
