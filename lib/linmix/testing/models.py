"""Small causal LMs for model tests: every mixer at a width that compiles in seconds."""

from __future__ import annotations

from flax import nnx

from linmix.models import LM, ModelConfig

SMALL = dict(vocab_size=64, d_model=32, num_layers=2, num_heads=2, mlp_ratio=2.0, chunk_size=16)


def make(mixer: str, **kw) -> LM:
    """An LM of the `SMALL` size with `mixer`, seed 0; keyword arguments override ModelConfig."""
    return LM(ModelConfig(**{**SMALL, "mixer": mixer, **kw}), rngs=nnx.Rngs(0))
