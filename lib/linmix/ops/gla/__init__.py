"""Gated linear attention (engine L): `gla(q, k, v, g, ...)`, see `linmix.ops.gla.api`; one
decode step `gla_step`; feature maps and the denominator normaliser in `features`."""

from linmix.ops.gla.api import IMPLEMENTATIONS, gla
from linmix.ops.gla.features import FEATURE_MAPS, feature_map
from linmix.ops.gla.step import gla_step

__all__ = ["FEATURE_MAPS", "IMPLEMENTATIONS", "feature_map", "gla", "gla_step"]
