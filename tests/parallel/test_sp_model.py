"""Sequence parallelism in the model and the train step, on 8 CPU devices: hybrid models'
training steps on meshes data=2 x seq=4, fsdp=2 x seq=4 and seq=8 equal the unsharded step (loss,
grad norm, and the gradient of every parameter, read off an SGD step with learning rate 1), with
packed segments crossing shard edges; the short conv's halo and the next-token targets across
shards equal their unsharded forms. (AdamW over the mesh is checked end to end by the CLI test.)"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from linmix.data import IGNORE_INDEX  # noqa: E402
from linmix.models import ModelConfig, layers  # noqa: E402
from linmix.models.layers import causal_conv  # noqa: E402
from linmix.models.mixers import attention as attention_mixer  # noqa: E402
from linmix.models.mixers import recurrent  # noqa: E402
from linmix.parallel import mesh_from_sizes  # noqa: E402
from linmix.parallel.context import SequenceParallel  # noqa: E402
from linmix.parallel.halo import next_token_targets, with_halo  # noqa: E402
from linmix.testing.numerics import rel_err
from linmix.train.sharding import (  # noqa: E402
    MIN_SHARDED,
    batch_sharding,
    in_mesh,
    put_batch,
    state_shardings,
)
from linmix.train.state import init_state  # noqa: E402
from linmix.train.step import train_step  # noqa: E402

B, T, VOCAB = 4, 32, 256
TOL = 1e-5


def _segments() -> np.ndarray:
    """Boundaries on a seq=4 shard edge (8), one token after one (17), inside shards."""
    marks = np.zeros((B, T), np.int32)
    marks[0, [8, 17, 29]] = 1
    marks[2, [3]] = 1
    return np.cumsum(marks, axis=1)


def _batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, VOCAB, (B, T), dtype=np.int32)
    targets[rng.random((B, T)) < 0.5] = IGNORE_INDEX
    return {
        "inputs": rng.integers(0, VOCAB, (B, T), dtype=np.int32),
        "targets": targets,
        "segment_ids": _segments(),
    }


HYBRIDS = {
    "gla_attention": dict(mixer="gla", layer_pattern="LA", mixer_options={"use_short_conv": True}),
    "deltanet_attention": dict(mixer="deltanet", layer_pattern="LA"),
    "conv_mamba": dict(mixer="mamba", layer_pattern="CL"),  # BaseConv (a halo), then Mamba
}


def _step(cfg: ModelConfig, mesh, batch: dict):
    """(initial model, state after one SGD step with lr 1, metrics)."""
    nnx.set_graph_mode(False)
    tx = optax.sgd(1.0)
    init_fn = functools.partial(init_state, cfg, tx, 0)
    step = functools.partial(train_step, tx=tx)
    if mesh is None:
        state = jax.jit(init_fn)()
        return (state.model, *jax.jit(step)(state, batch))
    state_sh = state_shardings(jax.eval_shape(init_fn), mesh)
    state = jax.jit(init_fn, out_shardings=state_sh)()
    fn = jax.jit(in_mesh(mesh, step), in_shardings=(state_sh, batch_sharding(mesh)),
                 out_shardings=(state_sh, None))  # fmt: skip
    return (state.model, *fn(state, put_batch(batch, batch_sharding(mesh))))


CASES = [  # (hybrid, mesh, the sequence-parallel pieces its layers must use)
    ("gla_attention", {"data": 2, "seq": 4}, ("gla_sharded", "attention_allgather_kv", "halo")),
    (
        "deltanet_attention",
        {"fsdp": 2, "seq": 4},
        ("delta_rule_sharded", "attention_allgather_kv", "halo"),
    ),  # fmt: skip
    ("conv_mamba", {"seq": 8}, ("selective_scan_sharded", "halo")),
]
PIECES = {  # module and name of each piece where the model looks it up
    "gla_sharded": recurrent, "delta_rule_sharded": recurrent,
    "selective_scan_sharded": recurrent, "attention_allgather_kv": attention_mixer,
    "halo": layers,
}  # fmt: skip


def _count_calls(monkeypatch) -> dict:
    calls = dict.fromkeys(PIECES, 0)
    for name, module in PIECES.items():
        attr = "with_halo" if name == "halo" else name
        original = getattr(module, attr)

        def counted(*a, _orig=original, _name=name, **kw):
            calls[_name] += 1
            return _orig(*a, **kw)

        monkeypatch.setattr(module, attr, counted)
    return calls


@pytest.mark.parametrize(("hybrid", "mesh_sizes", "pieces"), CASES)
def test_sharded_train_step_equals_unsharded(hybrid, mesh_sizes, pieces, monkeypatch):
    calls = _count_calls(monkeypatch)
    cfg = ModelConfig(vocab_size=VOCAB, d_model=32, num_layers=2, num_heads=2, mlp_ratio=2.0,
                      chunk_size=4, **HYBRIDS[hybrid])  # fmt: skip
    batch = _batch()
    init, want_state, want = _step(cfg, None, batch)
    mesh = mesh_from_sizes(mesh_sizes, explicit=False)
    assert not any(calls.values())  # the unsharded step runs the plain ops
    _, got_state, got = _step(cfg, mesh, batch)
    assert all(calls[p] > 0 for p in pieces), calls
    for name in ("loss", "grad_norm", "accuracy"):
        assert rel_err(got[name], want[name]) < TOL, (name, got[name], want[name])
    leaves = zip(jax.tree_util.tree_leaves_with_path(init), jax.tree.leaves(want_state.model),
                 jax.tree.leaves(got_state.model), strict=True)  # fmt: skip
    for (path, x0), want_x, got_x in leaves:  # the step moved every parameter by -grad
        assert rel_err(got_x - x0, want_x - x0) < TOL, jax.tree_util.keystr(path)
    if mesh.shape["fsdp"] > 1:  # FSDP: the large parameters are split
        big = [x for x in jax.tree.leaves(got_state.model) if x.size >= MIN_SHARDED]
        assert big
        for x in big:
            assert x.addressable_shards[0].data.size * 2 == x.size


def _sp(mesh_sizes: dict) -> SequenceParallel:
    return SequenceParallel(mesh_from_sizes(mesh_sizes, explicit=False))


@pytest.mark.parametrize("segmented", [False, True])
def test_short_conv_halo_equals_unsharded(segmented: bool):
    x = jax.random.normal(jax.random.key(0), (B, T, 6))
    kernel = jax.random.normal(jax.random.key(1), (4, 6))
    seg = jnp.asarray(_segments()) if segmented else None
    sp = _sp({"data": 2, "seq": 4})
    want = causal_conv(x, seg, kernel)
    got = jax.jit(lambda x, k: with_halo(causal_conv, x, seg, 3, sp, k))(x, kernel)
    assert rel_err(got, want) < 1e-6
    grad = jax.jit(jax.grad(lambda k: jnp.sum(with_halo(causal_conv, x, seg, 3, sp, k) ** 2)))(
        kernel
    )
    want_grad = jax.jit(jax.grad(lambda k: jnp.sum(causal_conv(x, seg, k) ** 2)))(kernel)
    assert rel_err(grad, want_grad) < 1e-5
    with pytest.raises(ValueError, match="exceeds the shard length"):
        with_halo(causal_conv, x, seg, 9, sp, kernel)


def test_next_token_targets_across_shards():
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (B, T), dtype=np.int32))
    seg = jnp.asarray(_segments())
    want = next_token_targets(tokens, seg, IGNORE_INDEX)
    # Closed form: the next token within the segment, IGNORE at each segment's last token.
    tok, s = np.asarray(tokens), np.asarray(seg)
    closed = np.full((B, T), IGNORE_INDEX, np.int32)
    same = s[:, 1:] == s[:, :-1]
    closed[:, :-1] = np.where(same, tok[:, 1:], IGNORE_INDEX)
    np.testing.assert_array_equal(want, closed)
    for sizes in ({"seq": 8}, {"data": 2, "seq": 4}):
        got = jax.jit(lambda t, sz=sizes: next_token_targets(t, seg, IGNORE_INDEX, _sp(sz)))(tokens)
        np.testing.assert_array_equal(got, closed)
