"""Sequence parallelism: LASP-2 wrappers of the chunked engines over a mesh axis `seq`, the
mesh from config sizes, and collective-byte accounting."""

from linmix.parallel.lasp2 import delta_rule_sharded, gla_sharded
from linmix.parallel.mesh import mesh_from_sizes

__all__ = ["delta_rule_sharded", "gla_sharded", "mesh_from_sizes"]
