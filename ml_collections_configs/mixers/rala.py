"""RALA: Fan, Huang & He, "Breaking the Low-Rank Dilemma of Linear Attention", CVPR 2025
(arXiv:2411.07635). Non-causal reduction with keys re-weighted by a global-query softmax.

Paper defaults (`RALAOptions`, from qhfan/RALA `GateLinearAttentionNoSilu`): phi = elu + 1,
2-D RoPE on the numerator, 5 x 5 LePE depthwise conv on v, linear output gate x W_o, eps 1e-6.

A bidirectional vision mixer (`causal=False`; tokens are a row-major patch grid), so it is not
trainable by the causal LM CLI, which stops with "the causal language model needs a config with
causal=True":

    python -m linmix.main --config=ml_collections_configs/mixers/rala.py --workdir=runs/rala

The config is the MQAR default with this mixer and `model.causal=False`; build the mixer with
`cfg = ModelConfig(**get_config().model.to_dict())`, `REGISTRY["rala"](cfg, rngs=nnx.Rngs(0))`.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402
from base import mixer_options  # noqa: E402


def get_config(arg: str | None = None):
    config = mqar.get_config()
    with config.unlocked():
        config.model.mixer = "rala"
        config.model.causal = False  # bidirectional: a vision mixer, not a causal LM layer
        config.model.mixer_options = mixer_options("rala")
    return config
