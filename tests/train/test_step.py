"""The supervised-position gather changes the cost of the loss, never its value."""

import jax
import numpy as np
from flax import nnx

from linmix.data import make_mqar_sources
from linmix.models import LM, ModelConfig
from linmix.train.step import eval_step, token_loss

nnx.set_graph_mode(False)


def test_gathered_loss_and_eval_equal_full_computation():
    n_pairs, batch = 3, 5
    train, _ = make_mqar_sources(64, 24, n_pairs, 16, 4, seed=0)
    data = {k: np.stack([train[i][k] for i in range(batch)]) for k in ("inputs", "targets")}
    cfg = ModelConfig(vocab_size=64, d_model=16, num_layers=2, mixer="gla", chunk_size=8)
    model = LM(cfg, rngs=nnx.Rngs(0))

    bound = batch * n_pairs  # every MQAR example supervises exactly n_pairs positions
    (full, full_aux), g_full = jax.value_and_grad(token_loss, has_aux=True)(model, data)
    (part, part_aux), g_part = jax.value_and_grad(token_loss, has_aux=True)(model, data, bound)
    np.testing.assert_allclose(part, full, rtol=1e-6)
    np.testing.assert_allclose(part_aux["accuracy"], full_aux["accuracy"])
    # Same sums in another order: fp32 rounding is relative to each leaf's scale, not to each entry.
    for a, b in zip(jax.tree.leaves(g_part), jax.tree.leaves(g_full), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.abs(b).max()))

    # A looser bound pads with masked rows; per-example eval counts are unchanged.
    want = eval_step(model, data)
    for m in (bound, bound + 7):
        got = eval_step(model, data, max_targets=m)
        np.testing.assert_array_equal(got["correct_B"], want["correct_B"])
        np.testing.assert_array_equal(got["supervised_B"], want["supervised_B"])
    np.testing.assert_array_equal(want["supervised_B"], np.full(batch, n_pairs))
