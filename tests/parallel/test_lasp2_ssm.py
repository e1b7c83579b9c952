"""LASP-2 for the selective scan on 8 CPU devices (meshes seq=8 and data=2 x seq=4, Explicit
axes, and one Auto-axis mesh): sharded == unsharded outputs, final states and gradients w.r.t.
every input (x, dt, A, B, C, D, z, dt_bias, initial_state), with packed segments whose boundaries
fall on, one before and inside shard edges, grouped B/C, dt_softplus off, T / W not a multiple of
the chunk size (12 / 8 on seq=8, 24 / 16 below), and collective traffic independent of T."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from linmix.ops.ssm import selective_scan  # noqa: E402
from linmix.parallel import comm  # noqa: E402
from linmix.parallel.lasp2_ssm import selective_scan_sharded  # noqa: E402
from linmix.testing.numerics import rel_err

B, T, Dc, N = 2, 96, 6, 4
TOL = 1e-4
MESHES = {"seq8": ((8,), ("seq",)), "data2_seq4": ((2, 4), ("data", "seq"))}


def _mesh(name: str, axis_type=jax.sharding.AxisType.Explicit):
    shape, axes = MESHES[name]
    return jax.make_mesh(shape, axes, axis_types=(axis_type,) * len(axes))


def _segments(T: int) -> jax.Array:
    """Row 0: starts at a shard edge of both meshes (24), one token before one (47) and inside
    shards; row 1: one segment spanning several shards, then a new one at an edge (48)."""
    rows = []
    for starts in ([5, 24, 47, 60, 61], [48]):
        marks = np.zeros(T, np.int32)
        marks[starts] = 1
        rows.append(np.cumsum(marks))
    return jnp.asarray(np.stack(rows))


def _inputs(T: int = T, groups: int | None = None, softplus: bool = True, seed: int = 0) -> dict:
    """Decays of about 0.9 per token, so the state carried across shards matters."""
    k = jax.random.split(jax.random.key(seed), 9)
    bc_shape = (B, T, N) if groups is None else (B, T, groups, N)
    dt = jax.random.normal(k[1], (B, T, Dc))
    return dict(
        x=jax.random.normal(k[0], (B, T, Dc)),
        dt=dt if softplus else 0.1 * jax.nn.sigmoid(dt),
        A=-jnp.exp(0.5 * jax.random.normal(k[2], (Dc, N))),
        B=jax.random.normal(k[3], bc_shape),
        C=jax.random.normal(k[4], bc_shape),
        D=jax.random.normal(k[5], (Dc,)),
        z=jax.random.normal(k[6], (B, T, Dc)),
        dt_bias=(-3.0 if softplus else 0.02) + 0.1 * jax.random.normal(k[7], (Dc,)),
        initial_state=jax.random.normal(k[8], (B, Dc, N)),
    )


def _runners(mesh, seg, **kw):
    """(sharded, unsharded) functions of the input dict returning (y, final state)."""
    sharded = selective_scan_sharded(mesh)

    def call(op):
        def f(x):
            x = dict(x)
            args = [x.pop(n) for n in ("x", "dt", "A", "B", "C", "D", "z")]
            return op(*args, **x, output_final_state=True, segment_ids=seg, **kw)

        return f

    return call(sharded), call(selective_scan)


def _check(run_sharded, run_plain, x: dict, mesh) -> None:
    ct = jax.random.normal(jax.random.key(9), x["x"].shape)
    ct_S = jax.random.normal(jax.random.key(10), x["initial_state"].shape)

    def loss(run):
        def f(x):
            y, S = run(x)
            return jnp.sum(y * ct) + jnp.sum(S * ct_S), (y, S)

        return jax.jit(jax.grad(f, has_aux=True))

    with jax.set_mesh(mesh):
        grads, (y, S) = loss(run_sharded)(x)
    want_grads, (want_y, want_S) = loss(run_plain)(x)
    assert y.dtype == want_y.dtype and S.dtype == jnp.float32
    assert rel_err(y, want_y) < TOL, rel_err(y, want_y)
    assert rel_err(S, want_S) < TOL, rel_err(S, want_S)
    assert set(grads) == set(x)
    for name in want_grads:
        err = rel_err(grads[name], want_grads[name])
        assert err < TOL, (name, err)


@pytest.mark.parametrize("segmented", [False, True])
@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_selective_scan_sharded_matches_unsharded(mesh_name: str, segmented: bool):
    mesh = _mesh(mesh_name)
    seg = _segments(T) if segmented else None
    _check(*_runners(mesh, seg, chunk_size=8), _inputs(), mesh)


def test_grouped_no_softplus_chunk_straddles_shards():
    """Grouped B/C (G = 2), delta = dt + dt_bias, and 24-token shards in 16-token chunks."""
    mesh = _mesh("data2_seq4")
    run = _runners(mesh, _segments(T), dt_softplus=False, chunk_size=16)
    _check(*run, _inputs(groups=2, softplus=False, seed=1), mesh)


def test_auto_mesh_under_jit():
    mesh = _mesh("data2_seq4", jax.sharding.AxisType.Auto)
    _check(*_runners(mesh, _segments(T), chunk_size=8), _inputs(groups=3, seed=2), mesh)


def test_defaults_match_unsharded():
    """No D, z, dt_bias or initial state; no final state asked for."""
    mesh = _mesh("seq8")
    x = _inputs(seed=3)
    x["dt"] = x["dt"] - 3.0
    args = (x["x"], x["dt"], x["A"], x["B"], x["C"])
    with jax.set_mesh(mesh):
        y, S = jax.jit(lambda a: selective_scan_sharded(mesh)(*a, chunk_size=8))(args)
    want, _ = selective_scan(*args, chunk_size=8)
    assert S is None
    assert rel_err(y, want) < TOL


def test_traffic_independent_of_T():
    """Forward collective bytes per device at T = 64 and 256 are equal: W stacked (a, M) pairs
    of [B, Dc, M] fp32 (and the segment ends), (W - 1) / W of them sent."""
    mesh = _mesh("seq8")
    run = selective_scan_sharded(mesh)
    sharding = NamedSharding(mesh, P(None, "seq"))

    def traffic(T: int, segmented: bool) -> float:
        x = _inputs(T)
        seg = jax.device_put(_segments(T), sharding) if segmented else None
        for n in ("x", "dt", "B", "C", "z"):
            x[n] = jax.device_put(x[n], sharding)

        def f(x):
            xs = dict(x)
            args = [xs.pop(n) for n in ("x", "dt", "A", "B", "C", "D", "z")]
            return run(*args, **xs, output_final_state=True, segment_ids=seg, chunk_size=8)

        with jax.set_mesh(mesh):
            return comm.compiled_collective_bytes(f, x)["total"]

    W = mesh.shape["seq"]
    states = W * 2 * B * Dc * N * 4  # the gathered [W, 2, B, Dc, M] fp32
    assert traffic(64, False) == traffic(256, False) == pytest.approx(states * (W - 1) / W)
    assert traffic(64, True) == traffic(256, True) > traffic(64, False)
