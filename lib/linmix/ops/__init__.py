"""The sequence-mixing ops (`gla`, `delta`, `ssm`, `attention` engines) and `checked`, which
jits a function with the ops' value checks staged (`linmix.ops.common.checks.checked`)."""

from linmix.ops.common.checks import checked

__all__ = ["checked"]
