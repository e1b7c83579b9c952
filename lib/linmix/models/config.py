"""Model configuration: a frozen dataclass, built by `train/` from the ml_collections config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from linmix.ops import dispatch

LAYER_CODES = {
    "L": "the configured mixer",
    "A": "softmax attention",
    "C": "a gated short convolution (BaseConv)",
}
DTYPES = ("float32", "bfloat16")
REMAT_POLICIES = ("none", "full", "dots")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a causal LM built from mixer blocks.

    `layer_pattern` is repeated to `num_layers` blocks: "L" is the configured `mixer`, "A" softmax
    attention, "C" a gated short convolution (BaseConv, options in `conv_options`), so "LLLA"
    with 8 layers gives two units of three linear blocks and one attention block, and "CL" with
    2 layers is Zoology's conv-then-mixer recall model. Layers are scanned over units; a unit
    holds one block per pattern letter.
    """

    vocab_size: int = 8192
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 2
    mixer: str = "attention"
    layer_pattern: str = "L"
    mixer_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    conv_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # "C" blocks
    mlp_ratio: float = 4.0  # GLU hidden width = mlp_ratio * d_model; 0 disables the MLP
    norm_eps: float = 1e-6
    tie_embeddings: bool = False
    dtype: str = "float32"  # compute dtype; parameters are always fp32
    remat: str = "none"  # "none" | "full" | "dots"
    chunk_size: int = 64  # chunk length of chunked ops (a performance knob, not the math)
    causal: bool = True  # False: a bidirectional stack (vision mixers); the LM needs True
    # engine -> op implementation of the whole-sequence calls ("" or absent: backend default)
    implementations: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mixer_options", dict(self.mixer_options))
        object.__setattr__(self, "conv_options", dict(self.conv_options))
        chosen = {e: i for e, i in dict(self.implementations).items() if i}
        object.__setattr__(self, "implementations", chosen)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        from linmix.models.mixers import REGISTRY  # local: mixers import this module
        from linmix.models.mixers.base_conv import BaseConv

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"model config: {msg}")

        need(self.mixer in REGISTRY, f"unknown mixer {self.mixer!r}; known: {sorted(REGISTRY)}")
        need(
            REGISTRY[self.mixer].causal or not self.causal,
            f"mixer {self.mixer!r} is not causal (a bidirectional vision mixer); the causal LM "
            f"takes one of {sorted(n for n, c in REGISTRY.items() if c.causal)}",
        )
        need(self.vocab_size >= 2, f"vocab_size must be >= 2, got {self.vocab_size}")
        need(self.d_model >= 1, f"d_model must be >= 1, got {self.d_model}")
        need(self.num_heads >= 1, f"num_heads must be >= 1, got {self.num_heads}")
        need(self.num_layers >= 1, f"num_layers must be >= 1, got {self.num_layers}")
        need(
            bool(self.layer_pattern) and set(self.layer_pattern) <= set(LAYER_CODES),
            f"layer_pattern {self.layer_pattern!r} may only use letters {sorted(LAYER_CODES)}",
        )
        need(
            self.num_layers % len(self.layer_pattern) == 0,
            f"num_layers={self.num_layers} is not a multiple of the layer_pattern "
            f"{self.layer_pattern!r} length {len(self.layer_pattern)}",
        )
        need(self.mlp_ratio >= 0, f"mlp_ratio must be >= 0, got {self.mlp_ratio}")
        need(self.dtype in DTYPES, f"dtype {self.dtype!r} not in {DTYPES}")
        need(self.remat in REMAT_POLICIES, f"remat {self.remat!r} not in {REMAT_POLICIES}")
        try:
            dispatch.check(self.implementations)
        except ValueError as e:
            need(False, str(e))
        c = self.chunk_size
        need(c >= 1 and c & (c - 1) == 0, f"chunk_size must be a power of two, got {c}")
        # Each mixer checks its own options (unknown keys, head divisibility) eagerly; "A" blocks
        # of a hybrid use attention with its defaults (mixer_options belong to the "L" mixer).
        REGISTRY[self.mixer].options_from(self)
        if "A" in self.layer_pattern:
            REGISTRY["attention"].options_from(self, {})
        if "C" in self.layer_pattern or self.conv_options:
            BaseConv.options_from(self, self.conv_options)

    @property
    def num_units(self) -> int:
        return self.num_layers // len(self.layer_pattern)
