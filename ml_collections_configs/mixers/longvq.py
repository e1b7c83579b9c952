"""LongVQ: Liu, Wang, Li, Wang, Lin & Li, "LongVQ: Long Sequence Modeling with Vector Quantization
on Structured Memory", IJCAI 2024 (arXiv:2404.11163). VQ-attention as engine L (class I, chunked
form, one-hot code keys, exp(q Cb^T) query features) in one softmax with an exact local window,
inside a MEGA block (damped multi-dim EMA as engine L, gates u, r, hx).

Defaults (`LongVQOptions`; the paper's own gating, window and codebook size are unverified):
MEGA-LM widths expand_k=0.25 (z), expand_v=2 (values), EMA dim 16; Transformer-VQ's 512 codes and
commitment weight 1e-4 (`commitment_loss`, not added by the LM trainer); window 32. On the MQAR
default task:

    python -m linmix.main --config=ml_collections_configs/mixers/longvq.py --workdir=runs/longvq
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    return mqar.get_config("mixer=longvq")
