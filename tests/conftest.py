"""Test setup: 8 fake CPU devices and strict rank promotion, before any backend use."""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_num_cpu_devices", 8) if hasattr(jax.config, "jax_num_cpu_devices") else None

import pytest


def pytest_collection_modifyitems(config, items):
    backend = jax.default_backend()
    for item in items:
        if "gpu" in item.keywords and backend != "gpu":
            item.add_marker(pytest.mark.skip(reason="needs a GPU backend"))
        if "tpu" in item.keywords and backend != "tpu":
            item.add_marker(pytest.mark.skip(reason="needs a TPU backend"))
