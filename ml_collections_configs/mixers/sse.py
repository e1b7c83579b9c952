"""SSE: Pan, An, Li, Chou, Zhu, Wang, Wang, Wang & Li, "Scaling Linear Attention with Sparse State
Expansion", ICLR 2026 (arXiv:2507.16577). Engine L, vector gate, chunked mask form on (N + 1) * H
heads (shared state + N partitions, top-k routing).

Paper defaults (`SSEOptions`, fla `SSEGLA` / `SSEConfig`): N = 4 partitions, top-1 writer and
reader ("n4k1"), expand_k = expand_v = 0.75, k softmax / q SiLU, two rank-16 GLA gates with logit
normaliser 16, LoRA q2 / k2 of rank head_v, output RMSNorm * swish low-rank gate; load-balancing
loss `SSE.aux_loss` with coefficient 0.01 (not added by the trainer). On the MQAR default task
(with the short conv every MQAR run uses):

    python -m linmix.main --config=ml_collections_configs/mixers/sse.py --workdir=runs/sse
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402


def get_config(arg: str | None = None):
    return mqar.get_config("mixer=sse")
