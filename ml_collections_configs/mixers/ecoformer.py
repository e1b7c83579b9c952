"""EcoFormer: Liu, Pan, He, Cai & Zhuang, "EcoFormer: Energy-Saving Attention with Linear
Complexity", NeurIPS 2022 (arXiv:2209.09004). Non-causal class-I reduction over b-bit binary hash
codes of a shared, unit-normalised query/key; the hash functions (RBF anchors + projection) are
buffers fit outside SGD by kernelised supervised hashing (`EcoFormer.refit_hash`).

Paper defaults (`EcoFormerOptions`, from ziplab/EcoFormer `pvt/configs/pvt_v2/*_ecoformer.py`,
`pvt/performer.py`): nbits=16, 25 anchors, topk=10 refit targets, the own-value bias term as
coded, qkv bias.

A bidirectional vision mixer, not trainable by the causal LM CLI:
`ModelConfig(causal=True)` refuses it, and
`python -m linmix.main --config=ml_collections_configs/mixers/ecoformer.py` stops with
"needs a config with causal=True". This config is the MQAR config with the mixer swapped in,
`model.causal=False` and the paper-default options, for building a bidirectional stack on
T = 64 tokens:

    python -c "import runpy; c = runpy.run_path('ml_collections_configs/mixers/ecoformer.py'); \
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
    config.model.mixer = "ecoformer"
    config.model.causal = False  # bidirectional: only a non-causal stack builds it
    config.model.mixer_options = mixer_options("ecoformer")
    return config
