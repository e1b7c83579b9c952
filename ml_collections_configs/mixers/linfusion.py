"""LinFusion: Liu, Yu, Tan & Wang, "LinFusion: 1 GPU, 1 Minute, 16K Image", 2024
(arXiv:2409.02097); and LiT: Wang et al., "LiT: Delving into a Simplified Linear Diffusion
Transformer for Image Generation", 2025 (arXiv:2501.12976). Non-causal class-I reduction
(normalised generalised linear attention); the options select the paper.

Paper defaults (`LinFusionOptions`, LinFusion's, from Huage001/LinFusion
`src/linfusion/attention.py`): elu+1 features, non-linear q/k input MLPs of width d_model,
mean normaliser with eps=1e-4, no conv, no q/k/v bias. The variant `lit` applies LiT's options
(`linfusion.LIT`: relu features, plain q/k, sum normaliser, eps=1e-6, 5x5 depthwise conv on V).

A bidirectional vision/diffusion mixer, not trainable by the causal LM CLI:
`ModelConfig(causal=True)` refuses it, and
`python -m linmix.main --config=ml_collections_configs/mixers/linfusion.py` stops with
"needs a config with causal=True". This config is the MQAR config with the mixer swapped in,
`model.causal=False` and the paper-default options, for building a bidirectional stack on
T = 64 = 8 x 8 tokens:

    python -c "import runpy; c = runpy.run_path('ml_collections_configs/mixers/linfusion.py'); \
        print(c['get_config']())"
    python -c "import runpy; c = runpy.run_path('ml_collections_configs/mixers/linfusion.py'); \
        print(c['get_config']('lit'))"
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402
from base import mixer_options  # noqa: E402

from linmix.models.mixers.linfusion import LIT  # noqa: E402


def get_config(arg: str | None = None):
    if arg not in (None, "", "linfusion", "lit"):
        raise ValueError(f"linfusion config: variant {arg!r} not in ('linfusion', 'lit')")
    config = mqar.get_config()
    config.model.mixer = "linfusion"
    config.model.causal = False  # bidirectional: only a non-causal stack builds it
    config.model.mixer_options = mixer_options("linfusion")
    if arg == "lit":
        config.model.mixer_options.update(LIT)
    return config
