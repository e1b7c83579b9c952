"""Collective bytes per device, read from a compiled executable's HLO text.

`cost_analysis()` has no collective bytes, so the optimised HLO is parsed: every all-gather,
reduce-scatter, all-reduce, collective-permute and all-to-all (and their async `-start` forms on
GPU), its result array and its group size W. Bytes a device sends, per collective:

    all-gather: result * (W - 1) / W      reduce-scatter: result * (W - 1)
    all-reduce: 2 * result * (W - 1) / W  collective-permute: result   all-to-all: result (W-1)/W

A collective inside a loop body is counted once (unrolled loops count every step).
"""

from __future__ import annotations

import re
from collections import defaultdict

_OPS = ("all-gather", "reduce-scatter", "all-reduce", "collective-permute", "all-to-all")
_LINE = re.compile(
    r"=\s*(?P<shape>.+?)\s+(?P<op>" + "|".join(_OPS) + r")(?:-start)?\((?P<rest>.*)$"
)
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")
_IOTA_GROUPS = re.compile(r"replica_groups=\[(\d+),(\d+)\]<=")
_LIST_GROUPS = re.compile(r"replica_groups=\{\{([\d,\s]*)\}")


def _itemsize(dtype: str) -> int:
    if dtype == "pred":
        return 1
    return int(re.sub(r"\D", "", dtype)) // 8


def _array_bytes(text: str) -> int:
    """Bytes of the last array in an HLO shape (an async start's tuple ends with its result)."""
    arrays = _ARRAY.findall(text)
    if not arrays:
        return 0
    dtype, dims = arrays[-1]
    n = 1
    for d in filter(None, dims.split(",")):
        n *= int(d)
    return n * _itemsize(dtype)


def _group_size(rest: str, default: int) -> int:
    if m := _IOTA_GROUPS.search(rest):
        return int(m.group(2))
    if m := _LIST_GROUPS.search(rest):
        return len([x for x in m.group(1).split(",") if x.strip()])
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
        out[op] += _sent(op, _array_bytes(m.group("shape")), W)
    out["total"] = sum(v for k, v in out.items() if k != "total")
    return dict(out)


def compiled_collective_bytes(fn, *args) -> dict[str, float]:
    """Collective bytes per device of `jax.jit(fn)(*args)` (compiled, not run)."""
    import jax

    compiled = jax.jit(fn).lower(*args).compile()
    return collective_bytes(compiled.as_text(), jax.device_count())
