"""LASP-2 on 8 CPU devices (meshes seq=8 and data=2 x seq=4): sharded == unsharded outputs,
final states and gradients, for every engine-L gate kind and engine Δ, with packed segments
whose boundaries fall on, before and after shard edges, and with chunks that straddle nothing
(T / W not a multiple of the chunk size)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linmix.ops.delta import delta_rule  # noqa: E402
from linmix.ops.gla import gla  # noqa: E402
from linmix.parallel import delta_rule_sharded, gla_sharded  # noqa: E402
from linmix.testing.numerics import rel_err

B, T, H, K, V = 2, 96, 2, 8, 12
TOL = 1e-4
MESHES = {"seq8": ((8,), ("seq",)), "data2_seq4": ((2, 4), ("data", "seq"))}


def _mesh(name: str):
    shape, axes = MESHES[name]
    return jax.make_mesh(shape, axes, axis_types=(jax.sharding.AxisType.Explicit,) * len(axes))


def _segments(T: int) -> jax.Array:
    """Row 0: starts at a shard edge of both meshes (24), one token before one (47) and inside
    shards; row 1: one segment spanning several shards, then a new one at an edge (48)."""
    rows = []
    for starts in ([5, 24, 47, 60, 61], [48]):
        marks = np.zeros(T, np.int32)
        marks[starts] = 1
        rows.append(np.cumsum(marks))
    return jnp.asarray(np.stack(rows))


def _inputs(gate: str | None, seed: int = 0) -> dict:
    keys = jax.random.split(jax.random.key(seed), 6)
    x = dict(
        q=jax.random.normal(keys[0], (B, T, H, K)),
        k=jax.random.normal(keys[1], (B, T, H, K)),
        v=jax.random.normal(keys[2], (B, T, H, V)),
        initial_state=jax.random.normal(keys[3], (B, H, K, V)),
    )
    if gate is not None:
        shape = (B, T, H, K) if gate == "vector" else (B, T, H)
        x["g"] = -0.5 * jax.nn.softplus(jax.random.normal(keys[4], shape))
    return x


def _check(run_sharded, run_plain, x: dict, mesh) -> None:
    def loss(run):
        def f(x):
            o, S = run(x)
            ct = jax.random.normal(jax.random.key(9), o.shape)
            ct_S = jax.random.normal(jax.random.key(10), S.shape)
            return jnp.sum(o * ct) + jnp.sum(S * ct_S), (o, S)

        return jax.jit(jax.grad(f, has_aux=True))

    with jax.set_mesh(mesh):
        grads, (o, S) = loss(run_sharded)(x)
    want_grads, (want_o, want_S) = loss(run_plain)(x)
    assert rel_err(o, want_o) < TOL and rel_err(S, want_S) < TOL
    for name in want_grads:
        assert rel_err(grads[name], want_grads[name]) < TOL, (
            name,
            rel_err(grads[name], want_grads[name]),
        )


@pytest.mark.parametrize(
    ("mesh_name", "gate", "segmented"),
    [("seq8", None, False), ("seq8", "scalar", True), ("seq8", "vector", True),
     ("data2_seq4", None, True), ("data2_seq4", "scalar", False), ("data2_seq4", "vector", True)],
)  # every gate on both meshes, packed segments on both  # fmt: skip
def test_gla_sharded_matches_unsharded(mesh_name: str, gate: str | None, segmented: bool):
    mesh = _mesh(mesh_name)
    seg = _segments(T) if segmented else None
    sharded = gla_sharded(mesh)

    def kwargs(x):
        return dict(g=x.get("g"), initial_state=x["initial_state"], output_final_state=True,
                    segment_ids=seg, chunk_size=8)  # fmt: skip

    _check(
        lambda x: sharded(x["q"], x["k"], x["v"], **kwargs(x)),
        lambda x: gla(x["q"], x["k"], x["v"], **kwargs(x)),
        _inputs(gate),
        mesh,
    )


@pytest.mark.parametrize(("gated", "segmented"), [(False, False), (True, True)])
@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_delta_rule_sharded_matches_unsharded(mesh_name: str, gated: bool, segmented: bool):
    mesh = _mesh(mesh_name)
    seg = _segments(T) if segmented else None
    sharded = delta_rule_sharded(mesh)
    x = _inputs("scalar" if gated else None, seed=1)
    x["beta"] = jax.nn.sigmoid(jax.random.normal(jax.random.key(5), (B, T, H)))

    def kwargs(x):
        return dict(g=x.get("g"), initial_state=x["initial_state"], output_final_state=True,
                    segment_ids=seg, use_qk_l2norm=True, chunk_size=8)  # fmt: skip

    _check(
        lambda x: sharded(x["q"], x["k"], x["v"], x["beta"], **kwargs(x)),
        lambda x: delta_rule(x["q"], x["k"], x["v"], x["beta"], **kwargs(x)),
        x,
        mesh,
    )


def test_gla_sharded_normalized_matches_unsharded():
    """Normalised linear attention (denominator z_t): the denominator travels as one more value
    column through the prefix; positive features keep it away from zero."""
    mesh = _mesh("data2_seq4")
    seg = _segments(T)
    x = _inputs("scalar", seed=2)
    x = {n: (jax.nn.elu(a) + 1 if n in ("q", "k") else a) for n, a in x.items()}
    x["initial_state"] = jnp.abs(jnp.concatenate([x["initial_state"]] * 2, -1)[..., : V + 1])
    sharded = gla_sharded(mesh)

    def kwargs(x):
        return dict(g=x["g"], initial_state=x["initial_state"], output_final_state=True,
                    segment_ids=seg, normalize=True, chunk_size=8)  # fmt: skip

    _check(
        lambda x: sharded(x["q"], x["k"], x["v"], **kwargs(x)),
        lambda x: gla(x["q"], x["k"], x["v"], **kwargs(x)),
        x,
        mesh,
    )


def test_sharded_dispatch():
    """`linmix.parallel.sharded(op, mesh)` gives the op's LASP-2 form; unknown ops fail clearly."""
    from linmix.parallel import sharded

    mesh = _mesh("seq8")
    x = _inputs("scalar", seed=3)
    with jax.set_mesh(mesh):
        got, _ = jax.jit(lambda x: sharded(gla, mesh)(x["q"], x["k"], x["v"], x["g"]))(x)
    want, _ = gla(x["q"], x["k"], x["v"], x["g"])
    assert rel_err(got, want) < TOL
    with pytest.raises(TypeError, match="no sequence-parallel form"):
        sharded(jnp.cumsum, mesh)


def test_triton_kernels_as_the_local_op():
    """LASP-2 with engine L's Triton kernels on each shard (Triton's interpreter on CPU, one
    device at a time) == the unsharded XLA form, with packed segments across shard edges."""
    mesh = _mesh("data2_seq4")
    seg = _segments(T)
    sharded = gla_sharded(mesh)

    def kwargs(x):
        return dict(g=x.get("g"), initial_state=x["initial_state"], output_final_state=True,
                    segment_ids=seg, chunk_size=16)  # fmt: skip

    _check(
        lambda x: sharded(x["q"], x["k"], x["v"], implementation="jax_triton", **kwargs(x)),
        lambda x: gla(x["q"], x["k"], x["v"], implementation="xla_chunked", **kwargs(x)),
        _inputs("scalar"),
        mesh,
    )
