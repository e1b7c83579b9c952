"""Sequence parallelism: LASP-2 wrappers of the chunked engines over a mesh axis `seq`, the
sequence-parallel context models consult, the mesh from config sizes, and collective-byte
accounting."""

from linmix.parallel.context import active, sequence_parallel
from linmix.parallel.lasp2 import delta_rule_sharded, gla_sharded
from linmix.parallel.lasp2_ssm import selective_scan_sharded
from linmix.parallel.mesh import initialize_distributed, mesh_from_sizes

__all__ = [
    "active",
    "delta_rule_sharded",
    "gla_sharded",
    "initialize_distributed",
    "mesh_from_sizes",
    "selective_scan_sharded",
    "sequence_parallel",
]
