"""LSSL: Gu, Johnson, Goel, Saab, Dao, Rudra & Ré, "Combining Recurrent, Convolutional, and
Continuous-time Models with Linear State-Space Layers", NeurIPS 2021 (arXiv:2110.13985), with the
diagonal state of S4D: Gu, Gupta, Goel & Ré, "On the Parameterization and Initialization of
Diagonal State Space Models", NeurIPS 2022 (arXiv:2206.11893). Time-invariant diagonal SSM,
chunked convolution form (FFT convolution as an option), diagonal recurrence for decoding.

Paper defaults (`LSSLOptions`, LSSL's `lssl.yaml`): state order 256 (128 conjugate complex
modes), LegS initialisation (its S4D diagonal), bilinear discretisation, dt in [1e-3, 1e-1],
one output channel, GELU and an output linear; on the MQAR default task:

    python -m linmix.main --config=ml_collections_configs/mixers/lssl.py --workdir=runs/lssl
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    return mqar.get_config("mixer=lssl")
