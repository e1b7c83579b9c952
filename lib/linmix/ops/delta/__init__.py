"""Gated delta rule (engine Δ: DeltaNet, Gated DeltaNet): `delta_rule(q, k, v, beta, g, ...)`,
see `linmix.ops.delta.api`; one decode step `delta_rule_step`."""

from linmix.ops.delta.api import IMPLEMENTATIONS, delta_rule
from linmix.ops.delta.normalize import l2_normalize
from linmix.ops.delta.step import delta_rule_step

__all__ = ["IMPLEMENTATIONS", "delta_rule", "delta_rule_step", "l2_normalize"]
