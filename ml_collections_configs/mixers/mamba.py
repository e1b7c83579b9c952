r"""Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", COLM 2024
(arXiv:2312.00752). Selective scan (class E), chunked form.

Paper defaults (`MambaOptions`): expand=2, state size 16, dt rank ceil(d/16), conv width 4,
dt in [1e-3, 0.1], S4D-real A init.

On the MQAR default task (with the short conv every MQAR run uses):

    python -m linmix.main --config=ml_collections_configs/mixers/mamba.py \
        --workdir=runs/mamba
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    if arg:
        raise ValueError(f"this config takes no variant (got {arg!r}); override with --config.X")
    return mqar.get_config("mixer=mamba")
