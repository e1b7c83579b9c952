"""InLine: Han, Pu, Xia, Han, Pan, Li, Lu, Song & Huang, "Bridging the Divide: Reconsidering Softmax
and Linear Attention", NeurIPS 2024 (arXiv:2412.06590). Non-causal reduction (injective
normalisation) + a dynamic 3 x 3 depthwise conv.

Paper defaults (`InLineOptions`, from LeapLabTHU/InLine `InLineAttention`): identity kernel
function, the per-image 3 x 3 conv of v with taps predicted from mean(x) by a head-grouped MLP.

A bidirectional vision mixer (`causal=False`; tokens are a row-major patch grid), so it is not
trainable by the causal LM CLI, which stops with "the causal language model needs a config with
causal=True":

    python -m linmix.main --config=ml_collections_configs/mixers/inline.py --workdir=runs/inline

The config is the MQAR default with this mixer and `model.causal=False`; build the mixer with
`cfg = ModelConfig(**get_config().model.to_dict())`, `REGISTRY["inline"](cfg, rngs=nnx.Rngs(0))`.
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
        config.model.mixer = "inline"
        config.model.causal = False  # bidirectional: a vision mixer, not a causal LM layer
        config.model.mixer_options = mixer_options("inline")
    return config
