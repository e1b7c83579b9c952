"""Gated linear attention (engine L): `gla(q, k, v, g, ...)`, see `linmix.ops.gla.api`."""

from linmix.ops.gla.api import IMPLEMENTATIONS, gla

__all__ = ["IMPLEMENTATIONS", "gla"]
