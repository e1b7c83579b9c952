"""The test environment itself: the sharding tests rely on an 8-device CPU mesh."""

import jax


def test_eight_cpu_devices():
    assert jax.device_count() == 8
    assert jax.config.jax_numpy_rank_promotion == "raise"
