"""MQAR (Zoology multi-query associative recall): the embedded default task.

Default: V=8192, T=64, 4 KV pairs, 2 layers, d=64, no MLP (Zoology's setup), softmax attention with
a short causal conv on q, k, v and tied embeddings, lr 3e-3, batch 64, 1000 steps. Expected: test
accuracy >= 0.97 by step 400 and ~0.99 at the end, in about two minutes on a 2-core CPU. The short
conv (on for every mixer that has one, as in Zoology's BaseConv hybrids) gives each token its
predecessor, so key-value binding needs no learned previous-token head; without it attention
stalls near 1/N accuracy for hundreds of steps. Variants choose the mixer by registry name (every
mixer, its paper and its command: docs/mixers_table.md) and optionally a named option preset:

    python -m linmix.main --config=ml_collections_configs/mqar.py --workdir=runs/mqar
    python -m linmix.main --config=ml_collections_configs/mqar.py:mixer=gla --workdir=runs/gla
    python -m linmix.main --config=ml_collections_configs/mqar.py --config.train.steps=200 ...
    python -m linmix.main --config=ml_collections_configs/mqar.py --config.mesh.seq=4 ...
    python -m linmix.main --config=ml_collections_configs/mqar.py:mixer=transnormer \
        --config.model.mixer_options.attention=diag --workdir=runs/transnormer_diag

A bidirectional (vision) mixer gets `model.causal=False`; the causal LM CLI refuses it, and
`ModelConfig(**get_config("mixer=slab").model.to_dict())` builds its non-causal stack
(`mixer=linfusion,preset=lit` selects LiT's options). An unknown variant key is an error.
"""

from linmix.configs.mqar import get_config

__all__ = ["get_config"]
