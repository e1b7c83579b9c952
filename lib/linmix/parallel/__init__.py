"""Sequence parallelism: LASP-2 wrappers of the chunked engines over a mesh axis `seq`."""

from linmix.parallel.lasp2 import delta_rule_sharded, gla_sharded

__all__ = ["delta_rule_sharded", "gla_sharded"]
