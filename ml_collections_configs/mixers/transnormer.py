"""TransNormer: Qin, Han, Sun, Li, Kong, Barnes & Zhong, "The Devil in Linear Transformer",
EMNLP 2022 (arXiv:2210.10340). NormAttention: engine L, no gate, chunked form; DiagAttention:
softmax attention inside non-overlapping blocks.

Paper defaults (`TransNormerOptions`, the T2 model): attention="norm" (1+elu kernel, no scaling or
denominator, SimpleRMSNorm over the concatenated heads); attention="diag" gives causal softmax
blocks of block_size=64 (the paper puts Diag in the first half of the layers). On the MQAR
default task (with the short conv every MQAR run uses):

    python -m linmix.main --config=ml_collections_configs/mixers/transnormer.py \
        --workdir=runs/transnormer
    python -m linmix.main --config=ml_collections_configs/mixers/transnormer.py \
        --config.model.mixer_options.attention=diag --workdir=runs/transnormer_diag
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    return mqar.get_config("mixer=transnormer")
