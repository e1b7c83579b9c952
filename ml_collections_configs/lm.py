"""Language modelling on real text: a prepared corpus, any causal mixer, sizes tiny to 1.3b.

    python -m linmix.prepare --corpus=shakespeare   # -> data/shakespeare (bytes, 4 plays held out)
    python -m linmix.main --config=ml_collections_configs/lm.py:mixer=attention,size=tiny \
        --workdir=runs/shakespeare
    python -m linmix.main --config=ml_collections_configs/lm.py:mixer=gla,size=tiny ...
    python -m linmix.main --config=ml_collections_configs/lm.py:mixer=gla,size=340m,data=data/bpe \
        --config.model.vocab_size=32000 --workdir=runs/gla_340m

Variants: `mixer` (any causal registry name, docs/mixers_table.md), `size` (tiny, 125m, 340m,
1.3b; linmix.configs.lm.SIZES) and `data` (the prepared corpus directory). Documents are packed
whole with the state reset at each (`--config.data.mode=cut` concatenates them instead).
Evaluation on the held-out documents reports eval_loss, eval_ppl and eval_bpb (bits per byte).
"""

from linmix.configs.lm import get_config

__all__ = ["get_config"]
