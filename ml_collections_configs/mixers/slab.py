"""SLAB: Guo, Chen, Tang & Wang, "SLAB: Efficient Transformers with Simplified Linear Attention and
Progressive Re-parameterized Batch Normalization", ICML 2024 (arXiv:2405.11582). Non-causal class-I
reduction (relu features, normalised) plus a 5x5 depthwise conv on V and a learned key position
table; PRepBN (the paper's progressive LayerNorm -> BatchNorm) is a norm, not part of the mixer.

Paper defaults (`SLABOptions`, from xinghaochen/SLAB `slab_deit.py`): qkv bias, conv_size=5,
14 x 14 zero-initialised key positions (bilinearly resized to other grids), eps=1e-6.

A bidirectional vision mixer, not trainable by the causal LM CLI:
`ModelConfig(causal=True)` refuses it, and
`python -m linmix.main --config=ml_collections_configs/mixers/slab.py` stops with
"needs a config with causal=True". This config is the MQAR config with the mixer swapped in,
`model.causal=False` and the paper-default options, for building a bidirectional stack on
T = 64 = 8 x 8 tokens:

    python -c "import runpy; c = runpy.run_path('ml_collections_configs/mixers/slab.py'); \
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
    config.model.mixer = "slab"
    config.model.causal = False  # bidirectional: only a non-causal stack builds it
    config.model.mixer_options = mixer_options("slab")
    return config
