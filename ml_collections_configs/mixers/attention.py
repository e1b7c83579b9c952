r"""Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (arXiv:1706.03762); sliding
window as in Beltagy, Peters & Cohan, "Longformer", 2020 (arXiv:2004.05150). Softmax attention (the
baseline, not linear).

Defaults (`AttentionOptions`): rotary, full causal window (`window=0`), as many kv heads as
query heads.

On the MQAR default task (with the short conv every MQAR run uses):

    python -m linmix.main --config=ml_collections_configs/mixers/attention.py \
        --workdir=runs/attention
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    if arg:
        raise ValueError(f"this config takes no variant (got {arg!r}); override with --config.X")
    return mqar.get_config("mixer=attention")
