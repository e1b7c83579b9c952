r"""Yang, Wang, Zhang, Shen & Kim, "Parallelizing Linear Transformers with the Delta Rule over
Sequence Length", NeurIPS 2024 (arXiv:2406.06484). Engine Δ, chunked WY/UT form.

Paper defaults (`DeltaNetOptions`): short conv + SiLU on q, k, v, L2-normalised q/k,
beta = sigmoid, output RMSNorm, no output gate.

On the MQAR default task (with the short conv every MQAR run uses):

    python -m linmix.main --config=ml_collections_configs/mixers/deltanet.py \
        --workdir=runs/deltanet
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    if arg:
        raise ValueError(f"this config takes no variant (got {arg!r}); override with --config.X")
    return mqar.get_config("mixer=deltanet")
