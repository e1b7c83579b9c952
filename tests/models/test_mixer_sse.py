"""SSE: the mask form on (N + 1) * H engine heads against the per-token recurrence over one shared
and N partition states (float64 numpy); top-k routing; decode touches only the chosen partitions;
the load-balancing loss; option errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linmix.models import REGISTRY, ModelConfig

nnx.set_graph_mode(False)

BASE = dict(vocab_size=64, d_model=32, num_layers=1, num_heads=2, mlp_ratio=0.0, chunk_size=8)
# Writers != readers, so a mix-up of the two masks shows.
ROUTED = dict(num_sparse_partition=3, num_writer=1, num_reader=2)


def make(**options):
    cfg = ModelConfig(**BASE, mixer="sse", mixer_options=options)
    return REGISTRY["sse"](cfg, rngs=nnx.Rngs(0))


def inputs(shape, seed=1):
    return jax.random.normal(jax.random.key(seed), shape)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def recurrence(q1, q2, k1, k2, v, g1, g2, e, w, r):
    """S0 <- diag(a1) S0 + k1^T v; Si <- diag(a2) Si + e_i k2^T v for chosen writers only;
    o = (q1 S0 + sum over chosen readers of e_i q2 Si) / sqrt(K). One batch row, float64."""
    T, H, K = q1.shape
    n = e.shape[-1]
    S0 = np.zeros((H, K, v.shape[-1]))
    S = np.zeros((n, H, K, v.shape[-1]))
    o = np.zeros((T, H, v.shape[-1]))
    for t in range(T):
        S0 = np.exp(g1[t])[..., None] * S0 + k1[t][..., None] * v[t][:, None]
        o[t] = np.einsum("hk,hkv->hv", q1[t], S0)
        for i in range(n):
            if w[t, i]:  # unchosen partitions neither decay nor write
                S[i] = np.exp(g2[t])[..., None] * S[i] + e[t, i] * k2[t][..., None] * v[t][:, None]
            if r[t, i]:
                o[t] += e[t, i] * np.einsum("hk,hkv->hv", q2[t], S[i])
    return o / np.sqrt(K)


@pytest.mark.parametrize("conv", [False, True])
def test_mask_form_equals_partition_recurrence(conv):
    mixer = make(**ROUTED, use_short_conv=conv)
    x = inputs((2, 13, BASE["d_model"]))
    feats = jax.jit(lambda m, x: m.features(x)[:-1])(mixer, x)
    e, w, r = mixer.route(x)
    assert len({tuple(row) for row in np.asarray(w[0])}) > 1, "routing should vary over tokens"
    o = np.stack(
        [
            recurrence(*(np.asarray(a[b], np.float64) for a in (*feats, e, w, r)))
            for b in range(x.shape[0])
        ]
    )
    expected = mixer.output(jnp.asarray(o, jnp.float32), x)
    assert rel_err(jax.jit(lambda m, x: m(x)[0])(mixer, x), expected) < 1e-5


def test_route_is_top_k_of_the_router_softmax():
    mixer = make(num_sparse_partition=5, num_writer=2, num_reader=3)
    e, w, r = (np.asarray(a) for a in mixer.route(inputs((2, 9, BASE["d_model"]))))
    np.testing.assert_allclose(e.sum(-1), 1.0, rtol=1e-6)
    for mask, k in ((w, 2), (r, 3)):
        assert np.all(mask.sum(-1) == k) and set(np.unique(mask)) <= {0.0, 1.0}
        chosen_min = np.where(mask > 0, e, np.inf).min(-1)
        other_max = np.where(mask > 0, -np.inf, e).max(-1)
        assert np.all(chosen_min >= other_max)


def test_decode_step_touches_only_the_written_partitions():
    mixer = make(**ROUTED, use_short_conv=True)
    x = inputs((2, 1, BASE["d_model"]), seed=4)
    cache = mixer.init_cache(2, 8)
    cache["state"] = inputs(cache["state"].shape, seed=5)
    _, new = jax.jit(lambda m, x, c: m(x, cache=c))(mixer, x, cache)
    n, h = ROUTED["num_sparse_partition"], BASE["num_heads"]
    old_S, new_S = (c["state"].reshape(2, n + 1, h, *c["state"].shape[2:]) for c in (cache, new))
    changed = np.asarray(jnp.any(old_S != new_S, axis=(2, 3, 4)))  # [B, N + 1]
    _, w, _ = mixer.route(x)
    assert changed[:, 0].all()  # the shared state always updates
    np.testing.assert_array_equal(changed[:, 1:], np.asarray(w[:, 0]) > 0)


def test_decode_matches_chunked_with_conv_and_several_writers():
    mixer = make(num_sparse_partition=4, num_writer=2, num_reader=1, use_short_conv=True)
    x = inputs((2, 12, BASE["d_model"]), seed=6)
    full = jax.jit(lambda m, x: m(x)[0])(mixer, x)
    step = jax.jit(lambda m, x, c: m(x, cache=c))
    y, cache = step(mixer, x[:, :5], mixer.init_cache(2, 12))
    ys = [y]
    for t in range(5, 12):
        y, cache = step(mixer, x[:, t : t + 1], cache)
        ys.append(y)
    assert rel_err(jnp.concatenate(ys, axis=1), full) < 1e-5


def test_aux_loss_is_one_when_balanced_and_n_over_k_when_collapsed():
    mixer = make()  # N = 4, k = 1
    x = inputs((2, 10, BASE["d_model"]))
    mixer.router.kernel[...] = jnp.zeros_like(mixer.router.kernel[...])
    # Uniform e: p_i = 1/N, and sum_i f_i = k, so the loss is exactly 1.
    np.testing.assert_allclose(mixer.aux_loss(x), 1.0, rtol=1e-6)
    # Every token routed to partition 0 with e_0 -> 1: the loss is N / k.
    mixer.router.kernel[...] = jnp.zeros_like(mixer.router.kernel[...]).at[:, 0].set(10.0)
    np.testing.assert_allclose(mixer.aux_loss(jnp.ones_like(x)), 4.0, rtol=1e-5)
    # Padding excluded by the mask does not count.
    mask = jnp.zeros((2, 10)).at[:, :3].set(1.0)
    np.testing.assert_allclose(
        mixer.aux_loss(jnp.ones_like(x).at[:, 3:].set(-1.0), mask), 4.0, rtol=1e-5
    )


def test_aux_loss_trains_the_router():
    mixer = make()
    x = inputs((2, 10, BASE["d_model"]))
    grad = jax.grad(lambda m: m.aux_loss(x))(mixer)
    assert jnp.any(grad.router.kernel[...] != 0)


@pytest.mark.parametrize(
    "options, field",
    [
        (dict(num_writer=4), "num_writer"),
        (dict(num_reader=0), "num_reader"),
        (dict(num_sparse_partition=1), "num_sparse_partition"),
        (dict(gate_low_rank_dim=0), "gate_low_rank_dim"),
    ],
)
def test_bad_options_raise(options, field):
    with pytest.raises(ValueError, match=f"mixer 'sse'.*{field}"):
        ModelConfig(**BASE, mixer="sse", mixer_options=options)
