"""Softmax attention: `attention(q, k, v, ...)`, see `linmix.ops.attention.api`."""

from linmix.ops.attention.api import IMPLEMENTATIONS, attention

__all__ = ["IMPLEMENTATIONS", "attention"]
