"""linmix: linear-time sequence mixers in JAX/Flax."""

__version__ = "0.1.0"
