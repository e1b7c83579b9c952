"""Error measures for comparing an op against its reference."""

from __future__ import annotations

import numpy as np


def rel_err(a, b) -> float:
    """Relative RMS error ||a - b|| / ||b||, computed in float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
