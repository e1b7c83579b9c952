"""JRT-RNN: Arora, Timalsina, Singhal, Spector, Eyuboglu, Zhao, Rao, Rudra & Ré, "Just read twice:
closing the recall gap for recurrent language models", arXiv 2024 (arXiv:2407.05483). Prefix
linear attention: engine L, no gate, chunked form from a non-causal prefix state.

Paper defaults (`JRTOptions`, official `PrefixLinearAttention`): feature dim 16 per head with the
2nd-order Taylor map (273 features), value head dim d_model / num_heads, denominator
normalisation, output W_o only. The prefix M defaults to 0 in the layer (causal); this config
encodes MQAR's key-value context non-causally, M = 2 * num_kv_pairs * num_passes, which is exact
because MQAR supervises only the queries after it. On the MQAR default task (with the short conv
every MQAR run uses):

    python -m linmix.main --config=ml_collections_configs/mixers/jrt.py --workdir=runs/jrt
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402

# Options this config sets away from the layer's defaults, on purpose (checked by the tests).
TASK_OPTIONS = ("prefix_len",)


def get_config(arg: str | None = None):
    config = mqar.get_config("mixer=jrt")
    data = config.data
    config.model.mixer_options.prefix_len = 2 * data.num_kv_pairs * data.num_passes
    return config
