"""Flax NNX models (tree mode): mixers, blocks and the causal LM."""

from linmix.models.config import ModelConfig
from linmix.models.lm import LM
from linmix.models.mixers import REGISTRY

__all__ = ["LM", "REGISTRY", "ModelConfig"]
