"""Agent attention: Han, Ye, Han, Xia, Pan, Wan, Song & Huang, "Agent Attention: On the Integration
of Softmax and Linear Attention", ECCV 2024 (arXiv:2312.08874). Two softmax attentions through n
pooled agent tokens (generalised linear attention).

Paper defaults (`AgentOptions`, from LeapLabTHU/Agent-Attention `agent_deit.py`): 49 agents
(7 x 7 adaptive pool of q), agent biases from 7 x 7 tables plus row/column tables of length 14,
3 x 3 depthwise conv on v.

A bidirectional vision mixer (`causal=False`; tokens are a row-major patch grid), so it is not
trainable by the causal LM CLI, which stops with "the causal language model needs a config with
causal=True":

    python -m linmix.main --config=ml_collections_configs/mixers/agent.py --workdir=runs/agent

The config is the MQAR default with this mixer and `model.causal=False`; build the mixer with
`cfg = ModelConfig(**get_config().model.to_dict())`, `REGISTRY["agent"](cfg, rngs=nnx.Rngs(0))`.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mqar  # noqa: E402
from base import mixer_options  # noqa: E402


def get_config(arg: str | None = None):
    config = mqar.get_config()
    with config.unlocked():
        config.model.mixer = "agent"
        config.model.causal = False  # bidirectional: a vision mixer, not a causal LM layer
        config.model.mixer_options = mixer_options("agent")
    return config
