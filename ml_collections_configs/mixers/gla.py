r"""GLA: Yang, Wang, Shen, Panda & Kim, "Gated Linear Attention Transformers with Hardware-Efficient
Training", ICML 2024 (arXiv:2312.06635). Engine L, vector gate, chunked form.

Paper defaults (`GLAOptions`): expand_k=0.5, expand_v=1, rank-16 gate with logit normaliser 16,
output RMSNorm * swish gate.

On the MQAR default task (with the short conv every MQAR run uses):

    python -m linmix.main --config=ml_collections_configs/mixers/gla.py \
        --workdir=runs/gla
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    if arg:
        raise ValueError(f"this config takes no variant (got {arg!r}); override with --config.X")
    return mqar.get_config("mixer=gla")
