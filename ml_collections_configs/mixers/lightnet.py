"""LightNet: Qin, Mao, Shen, Li, Zhang, Dai & Zhong, "You Only Scan Once: Efficient
Multi-dimension Sequential Modeling with LightNet", arXiv preprint 2024 (arXiv:2405.21022).
Engine L, vector gate from a running log-sum-exp (additive recurrence), chunked form.

Paper defaults (`LightNetOptions`, as fla's `layers/lightnet.py`): key and value dims = d_model,
keys normalised by the fp32 running log-sum-exp z_t with decay z_{t-1} - z_t, SiLU queries,
scale 1, output RMSNorm * swish of a rank-128 gate; on the MQAR default task (with the short conv
every MQAR run uses):

    python -m linmix.main --config=ml_collections_configs/mixers/lightnet.py --workdir=runs/lightnet
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    return mqar.get_config("mixer=lightnet")
