"""Test setup: 8 fake CPU devices and strict rank promotion, before any backend use; a shared
persistent compilation cache for the processes the tests start."""

import os
import shutil
import tempfile

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

# Processes started from here on (pytest-xdist workers; the CLI runs of the training tests: a
# run killed and resumed, sharded vs single-device runs) compile many of the same programs: they
# share JAX's persistent compilation cache, a fresh directory per test session (set here, in the
# first process, and inherited by the rest). JAX writes cache entries in place, so an entry cut
# short by a killed process (the reliability tests SIGKILL training runs) would crash a later
# reader: no session reads another session's entries.
CACHE_OWNER = "LINMIX_TESTS_CACHE_OWNER"
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="linmix-tests-jax-cache-")
    os.environ[CACHE_OWNER] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_unconfigure(config):
    """The session's first process removes the cache directory it made."""
    if os.environ.get(CACHE_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    backend = jax.default_backend()
    for item in items:
        if "gpu" in item.keywords and backend != "gpu":
            item.add_marker(pytest.mark.skip(reason="needs a GPU backend"))
        if "tpu" in item.keywords and backend != "tpu":
            item.add_marker(pytest.mark.skip(reason="needs a TPU backend"))
