"""`linmix.parallel.sharded(op, mesh)` called outside `jax.set_mesh(mesh)` (under jit, and
eagerly) equals the unsharded op, for every op it has a form of."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from linmix.ops.attention import attention
from linmix.ops.delta import delta_rule
from linmix.ops.gla import gla
from linmix.ops.ssm import selective_scan
from linmix.parallel import sharded
from linmix.testing.numerics import rel_err

B, T, H, K = 1, 64, 2, 16
TOL = 1e-4


def _cases():
    keys = jax.random.split(jax.random.key(0), 8)
    q, k, v = (jax.random.normal(kk, (B, T, H, K)) for kk in keys[:3])
    g = -jax.nn.softplus(jax.random.normal(keys[3], (B, T, H)))
    beta = jax.nn.sigmoid(jax.random.normal(keys[4], (B, T, H)))
    x, dt = (jax.random.normal(kk, (B, T, K)) for kk in keys[5:7])
    A = -jnp.exp(jax.random.normal(keys[7], (K, 4)))
    Bm = jax.random.normal(keys[0], (B, T, 4))
    states = dict(output_final_state=True)
    return {
        "gla": (gla, (q, k, v, g), states),
        "delta_rule": (delta_rule, (q, k, v, beta, g), {**states, "use_qk_l2norm": True}),
        "selective_scan": (selective_scan, (x, dt, A, Bm, Bm), states),
        "attention": (attention, (q, k, v), {}),
    }


def _check(got, want, name):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert rel_err(a, b) < TOL, (name, rel_err(a, b))


@pytest.mark.parametrize("name", ["gla", "delta_rule", "selective_scan", "attention"])
def test_sharded_outside_set_mesh_equals_unsharded(name):
    op, args, kwargs = _cases()[name]
    run = sharded(op, jax.make_mesh((8,), ("seq",)))
    got = jax.jit(lambda *a: run(*a, **kwargs))(*args)
    _check(got, jax.jit(lambda *a: op(*a, **kwargs))(*args), name)


def test_sharded_eager_call_outside_set_mesh():
    """Op by op (no jit), for the cheapest form: eager dispatch over 8 devices is slow."""
    op, args, kwargs = _cases()["attention"]
    got = sharded(op, jax.make_mesh((8,), ("seq",)))(*args, **kwargs)
    _check(got, op(*args, **kwargs), "attention")
