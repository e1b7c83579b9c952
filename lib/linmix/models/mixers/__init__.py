"""Mixer registry: name -> module class. One file per mixer; each says which engine it uses."""

from linmix.models.mixers.attention import Attention
from linmix.models.mixers.gla import GLA
from linmix.models.mixers.linear_attn import LinearAttn
from linmix.models.mixers.retnet import RetNet

REGISTRY = {cls.name: cls for cls in (LinearAttn, RetNet, GLA, Attention)}

__all__ = ["REGISTRY"]
