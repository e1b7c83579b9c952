"""Config building blocks (ml_collections) and task configs built from the mixer registry.

`linmix.configs.mqar.get_config` is the MQAR task config that `ml_collections_configs/mqar.py`
hands to the CLI; `linmix.configs.mixer_table` prints the table of registered mixers.
"""

from linmix.configs.common import (
    distributed_config,
    implementations_config,
    mesh_config,
    mixer_options,
    parse_variant,
    train_config,
)

__all__ = [
    "distributed_config",
    "implementations_config",
    "mesh_config",
    "mixer_options",
    "parse_variant",
    "train_config",
]
