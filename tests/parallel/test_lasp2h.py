"""Softmax attention over `seq` shards (LASP-2H all-gather of K, V; ring baseline) vs the
unsharded op, and collective-byte accounting: LASP-2 constant in T, all-gather-KV linear."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from linmix.ops.attention import attention  # noqa: E402
from linmix.parallel import comm, gla_sharded  # noqa: E402
from linmix.parallel.lasp2h import attention_allgather_kv, attention_ring  # noqa: E402
from linmix.testing.numerics import rel_err

B, T, H, D = 2, 64, 2, 8


def _mesh(shape=(8,), axes=("seq",)):
    return jax.make_mesh(shape, axes, axis_types=(jax.sharding.AxisType.Explicit,) * len(axes))


@pytest.mark.parametrize("method", [attention_allgather_kv, attention_ring])
def test_sharded_attention_matches_unsharded(method):
    mesh = _mesh((2, 4), ("data", "seq"))
    keys = jax.random.split(jax.random.key(0), 4)
    x = {n: jax.random.normal(keys[i], (B, T, H, D)) for i, n in enumerate("qkv")}
    marks = np.zeros((B, T), np.int32)
    marks[0, [10, 16, 40]] = 1
    seg = jnp.asarray(np.cumsum(marks, axis=1))
    ct = jax.random.normal(keys[3], (B, T, H, D))
    run = method(mesh)

    def grad_of(f):
        return jax.jit(jax.grad(lambda x: jnp.sum(f(x) * ct)))

    with jax.set_mesh(mesh):
        o = jax.jit(lambda x: run(x["q"], x["k"], x["v"], segment_ids=seg))(x)
        g = grad_of(lambda x: run(x["q"], x["k"], x["v"], segment_ids=seg))(x)
    want = attention(x["q"], x["k"], x["v"], segment_ids=seg, implementation="reference")
    want_g = grad_of(
        lambda x: attention(x["q"], x["k"], x["v"], segment_ids=seg, implementation="reference")
    )(x)
    assert rel_err(o, want) < 1e-5
    for n in "qkv":
        assert rel_err(g[n], want_g[n]) < 1e-5, n


@pytest.mark.parametrize("window", [None, 5, 20])
def test_allgather_kv_grouped_heads_and_window(window):
    """Grouped-query heads (4 query heads on 2 kv heads) and sliding windows shorter and longer
    than a shard (16 tokens on seq=4), against the unsharded reference."""
    mesh = _mesh((2, 4), ("data", "seq"))
    keys = jax.random.split(jax.random.key(1), 4)
    q = jax.random.normal(keys[0], (B, T, 4, D))
    k, v = (jax.random.normal(keys[i], (B, T, 2, D)) for i in (1, 2))
    seg = jnp.asarray(np.cumsum(np.eye(1, T, 30, dtype=np.int32).repeat(B, 0), axis=1))
    ct = jax.random.normal(keys[3], (B, T, 4, D))
    run = attention_allgather_kv(mesh)

    def sharded(q, k, v):
        return run(q, k, v, segment_ids=seg, window=window)

    def plain(q, k, v):
        return attention(q, k, v, segment_ids=seg, window=window, implementation="reference")

    def out_and_grads(f):
        grad = jax.grad(lambda *a: jnp.sum(f(*a) * ct), argnums=(0, 1, 2))
        return jax.jit(lambda *a: (f(*a), grad(*a)))

    with jax.set_mesh(mesh):
        got_o, got_g = out_and_grads(sharded)(q, k, v)
    want_o, want_g = out_and_grads(plain)(q, k, v)
    assert rel_err(got_o, want_o) < 1e-5
    for g, w in zip(got_g, want_g, strict=True):
        assert rel_err(g, w) < 1e-5


def test_all_gather_bytes_formula():
    mesh = _mesh()

    def f(x):
        return jax.shard_map(
            lambda x: jax.lax.all_gather(x, "seq", tiled=True), mesh=mesh,
            in_specs=P("seq"), out_specs=P(), check_vma=False,
        )(x)  # fmt: skip

    with jax.set_mesh(mesh):
        x = jax.reshard(jnp.zeros((8, 16), jnp.float32), P("seq"))
        got = comm.compiled_collective_bytes(f, x)
    # The result is [8, 16] fp32 = 512 bytes; each device sends its 1/8 to 7 others' view.
    assert got["all-gather"] == pytest.approx(512 * 7 / 8)


def test_tuple_all_reduce_and_mesh_groups():
    """A combined (tuple) all-reduce counts every array; `replica_groups=mesh[...] {axes}`
    groups are the listed axes' product; an async all-gather start counts its result only."""
    text = "\n".join([
        "%ar = (f32[512,64]{1,0}, f32[64]{0}) all-reduce(%a, %b), channel_id=2, "
        "replica_groups=mesh['axis_0'=2, 'axis_1'=4] {'axis_1'}, to_apply=%add",
        "%ags = (f32[8]{0}, f32[64]{0}) all-gather-start(%c), replica_groups=[1,8]<=[8]",
        "%agd = f32[64]{0} all-gather-done(%ags)",
    ])  # fmt: skip
    got = comm.collective_bytes(text, 8)
    assert got["all-reduce"] == pytest.approx((512 * 64 + 64) * 4 * 2 * 3 / 4)
    assert got["all-gather"] == pytest.approx(64 * 4 * 7 / 8)


def _forward_bytes(run, T_: int, mesh) -> float:
    """Collective bytes per device of one forward call at length T_ (compiled, not run)."""

    def f(q):
        out = run(q, q, q)
        return out[0] if isinstance(out, tuple) else out

    with jax.set_mesh(mesh):
        return comm.compiled_collective_bytes(f, jnp.zeros((1, T_, 2, 16)))["total"]


def test_lasp2_bytes_constant_in_T_allgather_kv_linear():
    mesh = _mesh()
    lasp2 = gla_sharded(mesh)
    kv = attention_allgather_kv(mesh)
    lasp2_bytes = [_forward_bytes(lasp2, t, mesh) for t in (64, 256)]
    kv_bytes = [_forward_bytes(kv, t, mesh) for t in (64, 256)]
    assert lasp2_bytes[0] > 0 and lasp2_bytes[0] == lasp2_bytes[1]
    assert kv_bytes[1] == pytest.approx(4 * kv_bytes[0], rel=0.05)
