r"""Sun, Dong, Huang, Ma, Xia, Xue, Wang & Wei, "Retentive Network: A Successor to Transformer
for Large Language Models", 2023 (arXiv:2307.08621). Engine L, fixed scalar decay per head, chunked
form.

Paper defaults (`RetNetOptions`): decay 1 - 2^(-5-h) per head, rotary q/k, expand_k=1, expand_v=2,
output RMSNorm * swish gate.

On the MQAR default task (with the short conv every MQAR run uses):

    python -m linmix.main --config=ml_collections_configs/mixers/retnet.py \
        --workdir=runs/retnet
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    if arg:
        raise ValueError(f"this config takes no variant (got {arg!r}); override with --config.X")
    return mqar.get_config("mixer=retnet")
