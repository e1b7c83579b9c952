"""Mixer registry: name -> module class. One file per mixer; each says which engine it uses."""

from linmix.models.mixers.agent import Agent
from linmix.models.mixers.alrnn import ALRNN
from linmix.models.mixers.attention import Attention
from linmix.models.mixers.deltanet import DeltaNet
from linmix.models.mixers.ecoformer import EcoFormer
from linmix.models.mixers.gated_deltanet import GatedDeltaNet
from linmix.models.mixers.gla import GLA
from linmix.models.mixers.hgrn2 import HGRN2
from linmix.models.mixers.inline import InLine
from linmix.models.mixers.jrt import JRT
from linmix.models.mixers.l2vit import L2ViT
from linmix.models.mixers.lightnet import LightNet
from linmix.models.mixers.lightning import Lightning
from linmix.models.mixers.linear_attn import LinearAttn
from linmix.models.mixers.linfusion import LinFusion
from linmix.models.mixers.longvq import LongVQ
from linmix.models.mixers.lssl import LSSL
from linmix.models.mixers.mala import MALA
from linmix.models.mixers.mamba import Mamba
from linmix.models.mixers.mamba2 import Mamba2
from linmix.models.mixers.rala import RALA
from linmix.models.mixers.retnet import RetNet
from linmix.models.mixers.sea import SEA
from linmix.models.mixers.slab import SLAB
from linmix.models.mixers.sse import SSE
from linmix.models.mixers.transnormer import TransNormer

REGISTRY = {
    cls.name: cls
    for cls in (
        LinearAttn,
        RetNet,
        GLA,
        Mamba,
        Mamba2,
        DeltaNet,
        GatedDeltaNet,
        Attention,
        MALA,
        RALA,
        InLine,
        Agent,
        SSE,
        JRT,
        SLAB,
        L2ViT,
        LinFusion,
        EcoFormer,
        TransNormer,
        Lightning,
        HGRN2,
        LightNet,
        ALRNN,
        LSSL,
        LongVQ,
        SEA,
    )
}

__all__ = ["REGISTRY"]
