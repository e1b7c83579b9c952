r"""Katharopoulos, Vyas, Pappas & Fleuret, "Transformers are RNNs: Fast Autoregressive
Transformers with Linear Attention", ICML 2020 (arXiv:2006.16236). Engine L, no gate, chunked form.

Paper defaults (`LinearAttnOptions`): feature map elu+1, expand_k=expand_v=1, output RMSNorm (fla's
default; `normalization='denominator'` gives the paper's division), no output gate.

On the MQAR default task (with the short conv every MQAR run uses):

    python -m linmix.main --config=ml_collections_configs/mixers/linear_attn.py \
        --workdir=runs/linear_attn
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    if arg:
        raise ValueError(f"this config takes no variant (got {arg!r}); override with --config.X")
    return mqar.get_config("mixer=linear_attn")
