"""AL-RNN: Brenner, Hemmer, Monfared & Durstewitz, "Almost-Linear RNNs Yield Highly Interpretable
Symbolic Codes in Dynamical Systems Reconstruction", NeurIPS 2024 (arXiv:2410.14240).
Nonlinear (piecewise-linear) recurrence, sequential lax.scan; as a mixer the latents are driven
by the projected tokens and read out by a linear map.

Paper defaults (`ALRNNOptions`, the Lorenz-63 setting of DurstewitzLab/ALRNN-DSR): M = 20 latents
per head of which P = 2 are ReLU units, A = diag of a normalised positive-definite matrix,
W ~ N(0, 0.01^2), h = 0; on the MQAR default task:

    python -m linmix.main --config=ml_collections_configs/mixers/alrnn.py --workdir=runs/alrnn
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    return mqar.get_config("mixer=alrnn")
