"""Sequence parallelism: LASP-2 wrappers of the chunked engines over a mesh axis `seq`, the
sequence-parallel context models consult, the mesh from config sizes, and collective-byte
accounting."""

from linmix.parallel.context import active, sequence_parallel
from linmix.parallel.lasp2 import delta_rule_sharded, gla_sharded
from linmix.parallel.lasp2_ssm import selective_scan_sharded
from linmix.parallel.mesh import initialize_distributed, mesh_from_sizes


def sharded(op, mesh, seq_axis: str = "seq"):
    """The sequence-parallel form of a linmix op, with the op's signature: `gla`, `delta_rule`
    and `selective_scan` -> LASP-2, `attention` -> LASP-2H's K, V all-gather (causal)."""
    from linmix.ops.attention import attention
    from linmix.ops.delta import delta_rule
    from linmix.ops.gla import gla
    from linmix.ops.ssm import selective_scan
    from linmix.parallel.lasp2h import attention_allgather_kv

    forms = {
        gla: gla_sharded,
        delta_rule: delta_rule_sharded,
        selective_scan: selective_scan_sharded,
        attention: attention_allgather_kv,
    }
    if op not in forms:
        names = sorted(f.__name__ for f in forms)
        raise TypeError(f"sharded: no sequence-parallel form of {op!r}; known ops: {names}")
    return forms[op](mesh, seq_axis)


__all__ = [
    "active",
    "delta_rule_sharded",
    "gla_sharded",
    "initialize_distributed",
    "mesh_from_sizes",
    "selective_scan_sharded",
    "sequence_parallel",
    "sharded",
]
