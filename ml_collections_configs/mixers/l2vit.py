"""L²ViT: Zheng, "The Linear Attention Resurrection in Vision Transformer", 2025
(arXiv:2501.16182). Non-causal class-I reduction (relu features, learned per-head temperature,
denominator clamped at 100) plus the local concentration module (DW7x7 -> GELU -> norm -> DW7x7).

Paper defaults (`L2ViTOptions`, from ChuanyangZheng/L2ViT `classification/models/l2vit.py`):
qkv bias, denom_min=100, LCM on with 7x7 kernels (its BatchNorm is a channel LayerNorm here).

A bidirectional vision mixer, not trainable by the causal LM CLI:
`ModelConfig(causal=True)` refuses it, and
`python -m linmix.main --config=ml_collections_configs/mixers/l2vit.py` stops with
"needs a config with causal=True". This config is the MQAR config with the mixer swapped in,
`model.causal=False` and the paper-default options, for building a bidirectional stack on
T = 64 = 8 x 8 tokens:

    python -c "import runpy; c = runpy.run_path('ml_collections_configs/mixers/l2vit.py'); \
        print(c['get_config']())"
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402
from base import mixer_options  # noqa: E402


def get_config(arg: str | None = None):
    config = mqar.get_config()
    config.model.mixer = "l2vit"
    config.model.causal = False  # bidirectional: only a non-causal stack builds it
    config.model.mixer_options = mixer_options("l2vit")
    return config
