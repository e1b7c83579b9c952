"""MAD synthetic tasks (Poli et al. 2024): in_context_recall, noisy_in_context_recall,
fuzzy_in_context_recall, selective_copying, memorization and compression.

Defaults per task are MAD's baseline (`linmix.data.MAD_TASKS`); the model is two blocks of the
mixer plus a SwiGLU MLP at width 128, trained with AdamW (lr 5e-4, no weight decay, cosine to
1e-6) at batch 128 for 1000 steps. Evaluation reports eval_accuracy: the mean over test examples
of the accuracy over their supervised positions. Task arguments are under data.task_options:

    python -m linmix.main --config=ml_collections_configs/mad.py --workdir=runs/mad_recall
    python -m linmix.main --config=ml_collections_configs/mad.py:mixer=gla,task=memorization \
        --workdir=runs/mad_gla_memorization
    python -m linmix.main --config=ml_collections_configs/mad.py:mixer=gla,task=selective_copying \
        --config.data.task_options.num_tokens_to_copy=8 --workdir=runs/mad_gla_copy8
"""

from linmix.configs.mad import get_config

__all__ = ["get_config"]
