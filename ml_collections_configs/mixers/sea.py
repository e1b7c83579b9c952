"""SEA: Lee, Kim, Willette & Hwang, "SEA: Sparse Linear Attention with Estimated Attention Mask",
ICLR 2024 (arXiv:2310.01777). Causal form: an estimate of each query's attention over a compressed
key axis from normalised Performer linear attention (engine L, class I, chunked form) and an MLP,
top-k cells per query (about k keys), exact softmax over the kept causal keys.

Defaults (`SEAOptions`, the official README example `--k 64 --predictor-length 256 --nbf 8`):
k=64, 256 cells, m = K ln K / 8 random features, top-k shared across heads, rotary q/k. Rows with
at most k keys are dense, so at MQAR's T=64 this is plain causal attention. The estimator learns
only from `distill_loss` (not added by the LM trainer). With the short conv every MQAR run uses:

    python -m linmix.main --config=ml_collections_configs/mixers/sea.py --workdir=runs/sea
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    return mqar.get_config("mixer=sea")
