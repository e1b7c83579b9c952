"""What every mixer shares: option parsing with paper defaults, head sizing, the call contract.

A mixer is an `nnx.Module` with `__call__(x_BTD, *, segment_ids=None) -> (y_BTD, cache)` and a
frozen `Options` dataclass holding its paper defaults; `ModelConfig.mixer_options` overrides them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from linmix.models.layers import DTYPES


@dataclasses.dataclass(frozen=True)
class Options:
    """Options every mixer accepts; subclasses add their own with the paper's defaults."""

    num_heads: int | None = None  # None: ModelConfig.num_heads


class Mixer:
    """Mixin giving a mixer its registry name, options and head bookkeeping."""

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = Options

    @classmethod
    def options_from(cls, cfg: Any, options: dict | None = None) -> Options:
        """Build this mixer's options from `cfg.mixer_options` (or `options`), checking them."""
        raw = cfg.mixer_options if options is None else options
        known = {f.name for f in dataclasses.fields(cls.Options)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(
                f"mixer {cls.name!r}: unknown option(s) {unknown}; known: {sorted(known)}"
            )
        opts = cls.Options(**raw)
        cls.check(cfg, opts)
        return opts

    @classmethod
    def check(cls, cfg: Any, opts: Options) -> None:
        """Validate options against the model width; raise ValueError naming the problem."""
        heads = opts.num_heads or cfg.num_heads
        for attr in ("expand_k", "expand_v"):
            if hasattr(opts, attr):
                width = int(cfg.d_model * getattr(opts, attr))
                if width < heads or width % heads:
                    raise ValueError(
                        f"mixer {cls.name!r}: d_model*{attr} = {width} is not divisible into "
                        f"{heads} heads"
                    )
        if not hasattr(opts, "expand_k") and cfg.d_model % heads:
            raise ValueError(
                f"mixer {cls.name!r}: d_model={cfg.d_model} not divisible by num_heads={heads}"
            )

    @staticmethod
    def compute_dtype(cfg: Any):
        return DTYPES[cfg.dtype]
