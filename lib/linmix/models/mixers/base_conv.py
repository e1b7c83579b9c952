"""BaseConv (Arora et al. 2023), a gated short convolution: the "C" letter of `layer_pattern`.

y = conv(x) * (x W + b) with a causal depthwise conv of a few taps. It mixes only neighbouring
tokens, and is the layer 0 of Zoology's later recall sweeps (`layer_pattern="CL"`): it hands
each token its predecessor, which key-value binding needs (docs/mixers.md#baseconv).
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from linmix.models.layers import ShortConv, dense
from linmix.models.mixers.base import Mixer, Options


@dataclasses.dataclass(frozen=True)
class BaseConvOptions(Options):
    conv_size: int = 3


class BaseConv(Mixer, nnx.Module):
    """Gated short convolution, BaseConv (Arora, Eyuboglu, Timalsina, Johnson, Poli, Zou, Rudra &
    Ré, "Zoology", ICLR 2024, arXiv:2312.04927).

    y_t = (sum_{j < w} c_j * x_{t-j}) * (x_t W + b): a causal depthwise convolution of w taps
    (reset at segment boundaries), gated elementwise by a linear projection with bias. No engine:
    it only mixes the last w tokens. Causal: decodes from the last w - 1 inputs. It is not a
    registry mixer; `layer_pattern` places it with the letter "C" (e.g. "CL": Zoology's
    `Hybrid([BaseConv, mixer])` over two layers).

    Options (`ModelConfig.conv_options`; num_heads is unused):
        conv_size (3): taps w of the convolution (Zoology's kernel_size).
    """

    name = "base_conv"
    Options = BaseConvOptions

    def __init__(self, cfg, *, rngs: nnx.Rngs, options: dict | None = None):
        o = self.options_from(cfg, options)
        dtype = self.compute_dtype(cfg)
        self.conv = ShortConv(cfg.d_model, o.conv_size, rngs=rngs, dtype=dtype)
        self.proj = dense(cfg.d_model, cfg.d_model, rngs=rngs, dtype=dtype, use_bias=True)

    @classmethod
    def check(cls, cfg, opts: Options) -> None:
        """Any width and head count work (the conv is per channel); at least one tap."""
        if opts.conv_size < 1:
            raise ValueError(f"mixer 'base_conv': conv_size must be >= 1, got {opts.conv_size}")

    def __call__(self, x_BTD: jax.Array, *, segment_ids=None, cache=None):
        self.check_call(x_BTD, segment_ids, cache)
        if cache is None:
            conv_BTD, new = self.conv(x_BTD, segment_ids), None
        else:
            conv_BTD, tail = self.conv.extend(x_BTD, cache["conv"])
            new = {"conv": tail}
        return conv_BTD * self.proj(x_BTD), new

    def init_cache(self, batch: int, max_len: int) -> dict:
        """The last conv_size - 1 inputs (zeros before the first token)."""
        return {"conv": self.conv.init_cache(batch)}
