"""Collective bytes per device, read from a compiled executable's HLO text.

`cost_analysis()` has no collective bytes, so the optimised HLO is parsed: every all-gather,
reduce-scatter, all-reduce, collective-permute and all-to-all (and their async `-start` forms on
GPU), its result array and its group size W. Bytes a device sends, per collective:

    all-gather: result * (W - 1) / W      reduce-scatter: result * (W - 1)
    all-reduce: 2 * result * (W - 1) / W  collective-permute: result   all-to-all: result (W-1)/W

A collective inside a loop body is counted once (unrolled loops count every step).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

_OPS = ("all-gather", "reduce-scatter", "all-reduce", "collective-permute", "all-to-all")
_LINE = re.compile(
    r"=\s*(?P<shape>.+?)\s+(?P<op>" + "|".join(_OPS) + r")(?:-start)?\((?P<rest>.*)$"
)
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")
_IOTA_GROUPS = re.compile(r"replica_groups=\[(\d+),(\d+)\]<=")
_LIST_GROUPS = re.compile(r"replica_groups=\{\{([\d,\s]*)\}")
_MESH_GROUPS = re.compile(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}")


def _itemsize(dtype: str) -> int:
    if dtype == "pred":
        return 1
    return int(re.sub(r"\D", "", dtype)) // 8


def _result_bytes(shape: str, op: str, started: bool) -> int:
    """Bytes of a collective's result from its HLO shape: every array of a (combined, tuple)
    result, except an async all-gather / permute start, whose tuple is (operand, result)."""
    arrays = _ARRAY.findall(shape)
    if started and op != "all-reduce":
        arrays = arrays[-1:]
    total = 0
    for dtype, dims in arrays:
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * _itemsize(dtype)
    return total


def _group_size(rest: str, default: int) -> int:
    if m := _IOTA_GROUPS.search(rest):
        return int(m.group(2))
    if m := _LIST_GROUPS.search(rest):
        return len([x for x in m.group(1).split(",") if x.strip()])
    if m := _MESH_GROUPS.search(rest):  # mesh['a'=2, 'b'=4] {'b'}: the listed axes' product
        sizes = {a: int(n) for a, n in re.findall(r"'(\w+)'=(\d+)", m.group(1))}
        return math.prod(sizes[a] for a in re.findall(r"'(\w+)'", m.group(2)))
    return default


def _sent(op: str, result: int, W: int) -> float:
    if W <= 1:
        return 0.0
    return {
        "all-gather": result * (W - 1) / W,
        "reduce-scatter": result * (W - 1),
        "all-reduce": 2 * result * (W - 1) / W,
        "collective-permute": result,
        "all-to-all": result * (W - 1) / W,
    }[op]


def collective_bytes(hlo_text: str, num_devices: int) -> dict[str, float]:
    """{collective: bytes per device} and 'total', from optimised HLO text."""
    out: dict[str, float] = defaultdict(float)
    for line in hlo_text.splitlines():
        m = _LINE.search(line)
        if m is None or "-done" in line.split("=")[0]:
            continue
        op = m.group("op")
        W = _group_size(m.group("rest"), num_devices)
        started = line[m.end("op") : m.end("op") + 6] == "-start"
        out[op] += _sent(op, _result_bytes(m.group("shape"), op, started), W)
    out["total"] = sum(v for k, v in out.items() if k != "total")
    return dict(out)


def compiled_collective_bytes(fn, *args) -> dict[str, float]:
    """Collective bytes per device of `jax.jit(fn)(*args)` (compiled, not run)."""
    import jax

    compiled = jax.jit(fn).lower(*args).compile()
    return collective_bytes(compiled.as_text(), jax.device_count())
