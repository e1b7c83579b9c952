"""Lightning Attention-2: Qin, Sun, Li, Shen, Sun & Zhong, "Lightning Attention-2: A Free Lunch for
Handling Unlimited Sequence Lengths in Large Language Models", arXiv 2024 (arXiv:2401.04658), in
the TransNormerLLM layer of "Various Lengths, Constant Speed: Efficient Language Modeling with
Lightning Attention", ICML 2024 (arXiv:2405.17381). Engine L, fixed per-head scalar decay,
chunked form.

Paper defaults (`LightningOptions`): ALiBi decay slopes (slope_scale=1, TNL's first layer), SiLU
q/k/v, scale 1 and no denominator, LayerNorm over the heads times a sigmoid gate of rank
head_dim; on the MQAR default task (with the short conv every MQAR run uses):

    python -m linmix.main --config=ml_collections_configs/mixers/lightning.py \
        --workdir=runs/lightning
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    return mqar.get_config("mixer=lightning")
