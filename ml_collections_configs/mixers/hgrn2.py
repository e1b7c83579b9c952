"""HGRN2: Qin, Yang, Sun, Shen, Li, Sun & Zhong, "HGRN2: Gated Linear RNNs with State Expansion",
COLM 2024 (arXiv:2404.07904). Engine L, vector gate, chunked form (GLA with k = 1 - f).

Paper defaults (`HGRN2Options`, fla's layer): key (state expansion) dim expand_ratio=128 per
head, swish(q), forget gate bounded below by a learned γ (per layer here, starting at 0.5),
RMSNorm over the heads and no output gate; on the MQAR default task (with the short conv every
MQAR run uses):

    python -m linmix.main --config=ml_collections_configs/mixers/hgrn2.py --workdir=runs/hgrn2
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    return mqar.get_config("mixer=hgrn2")
