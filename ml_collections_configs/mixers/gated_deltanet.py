r"""Yang, Kautz & Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule",
ICLR 2025 (arXiv:2412.06464). Engine Δ with a scalar gate, chunked WY/UT form.

Paper defaults (`GatedDeltaNetOptions`): expand_k=0.75, expand_v=1.5, Mamba2's gate
(A ~ U(0, 16), dt in [1e-3, 0.1]), short convs, output RMSNorm * SiLU gate.

On the MQAR default task (with the short conv every MQAR run uses):

    python -m linmix.main --config=ml_collections_configs/mixers/gated_deltanet.py \
        --workdir=runs/gated_deltanet
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    if arg:
        raise ValueError(f"this config takes no variant (got {arg!r}); override with --config.X")
    return mqar.get_config("mixer=gated_deltanet")
