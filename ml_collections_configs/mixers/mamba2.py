r"""Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through
Structured State Space Duality", ICML 2024 (arXiv:2405.21060). Engine L, scalar gate, chunked form.

Paper defaults (`Mamba2Options`): expand=2, head dim 64, state size 128, one group, conv width 4,
A ~ U(1, 16), dt in [1e-3, 0.1], gated RMSNorm.

On the MQAR default task (with the short conv every MQAR run uses):

    python -m linmix.main --config=ml_collections_configs/mixers/mamba2.py \
        --workdir=runs/mamba2
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    if arg:
        raise ValueError(f"this config takes no variant (got {arg!r}); override with --config.X")
    return mqar.get_config("mixer=mamba2")
