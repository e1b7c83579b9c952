"""Flax NNX models (tree mode): mixers, blocks and the causal LM."""

from linmix.models.config import ModelConfig
from linmix.models.lm import LM, parameter_count
from linmix.models.mixers import REGISTRY

__all__ = ["LM", "REGISTRY", "ModelConfig", "parameter_count"]
