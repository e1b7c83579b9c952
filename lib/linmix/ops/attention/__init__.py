"""Softmax attention: `attention(q, k, v, ...)` (see `api`), and `attention_decode` over a cache."""

from linmix.ops.attention.api import IMPLEMENTATIONS, attention
from linmix.ops.attention.decode import attention_decode

__all__ = ["IMPLEMENTATIONS", "attention", "attention_decode"]
