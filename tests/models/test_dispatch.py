"""`ModelConfig.implementations`: the model's whole-sequence engine calls run the implementation
named per engine (`linmix.ops.dispatch`), decode steps are unaffected, bad names are refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from linmix.configs.mqar import get_config
from linmix.models import REGISTRY, ModelConfig
from linmix.ops.dispatch import implementation, use_implementations
from linmix.testing.models import SMALL, make

nnx.set_graph_mode(False)

TOKENS = jnp.asarray(np.random.default_rng(0).integers(1, 64, (2, 20)), jnp.int32)


@pytest.mark.parametrize(
    ("mixer", "engine", "impl"),
    [("retnet", "gla", "associative_scan"), ("deltanet", "delta", "reference"),
     ("mamba", "ssm", "associative_scan"), ("gla", "gla", "jax_triton"),
     ("gated_deltanet", "delta", "jax_triton")],
)  # fmt: skip
def test_named_implementation_gives_the_same_logits(mixer, engine, impl):
    want = make(mixer)(TOKENS)
    got = make(mixer, implementations={engine: impl})(TOKENS)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-4, atol=2e-4)


def test_the_named_implementation_is_the_one_called():
    """'pallas_mosaic_gpu' refuses fp32 inputs: reaching that error shows the model called it; an
    empty name keeps the default."""
    with pytest.raises(ValueError, match="does not support dtype float32"):
        make("retnet", implementations={"gla": "pallas_mosaic_gpu"})(TOKENS)
    assert make("retnet", implementations={"gla": ""})(TOKENS).shape == (2, 20, 64)


def test_decode_steps_ignore_it_prefill_uses_it():
    cfg = ModelConfig(**{**SMALL, "mixer": "retnet"})
    mixer = REGISTRY["retnet"](cfg, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 1, SMALL["d_model"]))
    with use_implementations({"gla": "pallas_mosaic_gpu"}):
        y, cache = mixer(x, cache=mixer.init_cache(2, 8))  # one token: the decode step
        assert y.shape == x.shape and implementation("gla") == {
            "implementation": "pallas_mosaic_gpu"
        }
        with pytest.raises(ValueError, match="does not support dtype float32"):
            mixer(jnp.concatenate([x, x], axis=1), cache=cache)  # prefill: the chunked form
    assert implementation("gla") == {}


@pytest.mark.parametrize(
    ("implementations", "match"),
    [({"attention": "xla"}, "unknown engine"), ({"gla": "cuda"}, "no implementation 'cuda'"),
     ({"ssm": "pallas_gpu"}, "no implementation")],
)  # fmt: skip
def test_bad_names_raise(implementations, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{**SMALL, "mixer": "gla", "implementations": implementations})
    with pytest.raises(ValueError, match=match), use_implementations(implementations):
        pass


def test_cli_override_reaches_the_model():
    """`--config.model.implementations.gla=...` is a known key of every config."""
    config = get_config("mixer=retnet")
    config.model.implementations.gla = "associative_scan"
    cfg = ModelConfig(**config.model.to_dict())
    assert cfg.implementations == {"gla": "associative_scan"}


@pytest.mark.parametrize(("mixer", "engine"), [("retnet", "gla"), ("gated_deltanet", "delta")])
def test_bf16_model_on_mosaic_kernels(mixer, engine):
    """A bf16 model running its engine on the Mosaic GPU kernels (GPU interpreter on CPU) is as
    close to the fp32 model as the same bf16 model on the default implementation."""
    want = make(mixer)(TOKENS)

    def err(**kw):
        got = make(mixer, dtype="bfloat16", **kw)(TOKENS)
        return float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))

    default, mosaic = err(), err(implementations={engine: "pallas_mosaic_gpu"})
    assert default < 0.05 and mosaic < 1.5 * default, (default, mosaic)
