"""The device mesh from a config: axes ('data', 'fsdp', 'seq', 'tensor'), one size may be -1.

    mesh_from_sizes({"data": -1, "seq": 4})   # 8 devices -> data=2, fsdp=1, seq=4, tensor=1

Axes are Explicit by default (as `jax.make_mesh`'s), Auto on request. Bad sizes fail with one line
that says what was asked and how many devices there are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax

AXES = ("data", "fsdp", "seq", "tensor")


def resolve_sizes(sizes: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Axis sizes with the -1 (at most one) filled in so that their product is num_devices."""
    unknown = set(sizes) - set(AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; the axes are {AXES}")
    full = {a: int(sizes.get(a, 1)) for a in AXES}
    free = [a for a, s in full.items() if s == -1]
    bad = [a for a, s in full.items() if s == 0 or s < -1]
    if bad or len(free) > 1:
        raise ValueError(f"mesh sizes must be positive with at most one -1, got {full}")
    fixed = math.prod(s for s in full.values() if s != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(
                f"mesh {full}: {num_devices} devices are not divisible by the fixed sizes' "
                f"product {fixed}"
            )
        full[free[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(f"mesh {full} has {fixed} devices, but {num_devices} are available")
    return full


def mesh_from_sizes(
    sizes: Mapping[str, int], devices=None, *, explicit: bool = True
) -> jax.sharding.Mesh:
    """A mesh over `devices` (default: all) with the four axes, sizes from `resolve_sizes`.
    `explicit=False` gives Auto axes (the compiler propagates shardings; the trainer's mode)."""
    devices = jax.devices() if devices is None else devices
    full = resolve_sizes(sizes, len(devices))
    kind = jax.sharding.AxisType.Explicit if explicit else jax.sharding.AxisType.Auto
    shape = tuple(full[a] for a in AXES)
    return jax.make_mesh(shape, AXES, axis_types=(kind,) * len(AXES), devices=devices)


def initialize_distributed(
    coordinator_address: str = "", num_processes: int = 0, process_id: int = -1
) -> None:
    """`jax.distributed.initialize()` for a multi-process run; empty / 0 / -1 arguments are left
    to JAX's cluster detection (SLURM, Open MPI, TPU pod metadata)."""
    kwargs = {}
    if coordinator_address:
        kwargs["coordinator_address"] = coordinator_address
    if num_processes > 0:
        kwargs["num_processes"] = num_processes
    if process_id >= 0:
        kwargs["process_id"] = process_id
    jax.distributed.initialize(**kwargs)
