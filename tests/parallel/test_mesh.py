"""Mesh from config sizes: -1 fills in, bad sizes fail with a clear message."""

from __future__ import annotations

import jax
import pytest

from linmix.parallel.mesh import AXES, mesh_from_sizes, resolve_sizes


def test_minus_one_fills_the_remaining_devices():
    mesh = mesh_from_sizes({"data": -1, "seq": 4})
    assert mesh.axis_names == AXES
    assert dict(mesh.shape) == {"data": 2, "fsdp": 1, "seq": 4, "tensor": 1}
    assert mesh.size == jax.device_count() == 8


def test_explicit_sizes_and_defaults():
    assert resolve_sizes({"seq": 8}, 8) == {"data": 1, "fsdp": 1, "seq": 8, "tensor": 1}
    assert resolve_sizes({"data": 2, "fsdp": 2, "seq": 2}, 8)["tensor"] == 1


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ({"data": -1, "seq": -1}, "at most one -1"),
        ({"seq": 0}, "positive"),
        ({"seq": 3, "data": -1}, "not divisible"),
        ({"seq": 4}, "has 4 devices, but 8"),
        ({"sequence": 8}, "unknown mesh axes"),
    ],
)
def test_bad_sizes_fail_clearly(sizes, message):
    with pytest.raises(ValueError, match=message):
        resolve_sizes(sizes, 8)
