"""What every mixer shares: option parsing with paper defaults, head sizing, the call contract.

A mixer is an `nnx.Module` with a frozen `Options` dataclass holding its paper defaults
(`ModelConfig.mixer_options` overrides them) and

    __call__(x_BTD, *, segment_ids=None, cache=None) -> (y_BTD, cache)

With `cache=None` it runs the whole sequence (chunked or parallel form) and returns no cache.
A causal mixer also continues a sequence: `cache = mixer.init_cache(batch, max_len)` is the
fixed-size state before the first token, and `mixer(x_BTD, cache=cache)` consumes T more tokens
(T = 1: the recurrent decode step; T > 1: the chunked form from the cached state, i.e. prefill)
and returns the advanced cache. Packed segments and a cache do not mix: a cached row is one
sequence.
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
    """Base of every mixer in `REGISTRY`: its name, its options and the call contract.

    A mixer sets `name` (its registry key), `Options` (a frozen dataclass whose defaults are the
    paper's; `ModelConfig.mixer_options` overrides fields by name and rejects unknown ones) and
    `causal`, and is called as `mixer(x_BTD, segment_ids=None, cache=None) -> (y_BTD, cache)`.

    Causal (`causal = True`): token t sees only tokens <= t. `init_cache(batch, max_len)` is the
    state before the first token; a call with it consumes T more tokens (T = 1: the decode step,
    T > 1: prefill) and returns the advanced cache.
    Bidirectional (`causal = False`, the vision mixers): every token sees every token and there
    is no cache; `permutation_equivariant` says whether shuffling the tokens shuffles the outputs.

    Option of every mixer (the base `Options`):
        num_heads (None): number of heads; None takes `ModelConfig.num_heads`. Per-head widths
            are the mixer's total widths divided by it. Mixers that size their heads otherwise
            say so in their own docstring.

    Each mixer's docstring names its paper, its engine and form, and its other options.
    """

    name: ClassVar[str]
    Options: ClassVar[type[Options]] = Options
    causal: ClassVar[bool] = True  # False: a bidirectional (vision / prefix) mixer, no cache
    # Bidirectional mixers only: True when shuffling the tokens shuffles the outputs alike (no
    # positional structure such as windows, convolutions or pooling over a grid).
    permutation_equivariant: ClassVar[bool] = False

    def init_cache(self, batch: int, max_len: int) -> dict:
        """The decode cache before the first token (a pytree of arrays)."""
        raise ValueError(f"mixer {self.name!r} is not causal: it has no decode cache")

    def cache_limit(self, max_len: int) -> int | None:
        """How many tokens `init_cache(batch, max_len)` can hold (None: unbounded, the
        fixed-size states of linear mixers)."""
        return None

    def check_call(self, x_BTD: Any, segment_ids: Any, cache: Any) -> None:
        """Reject what the call contract forbids, with a message naming the mixer."""
        shape = getattr(x_BTD, "shape", None)
        if shape is None or len(shape) != 3:
            raise ValueError(f"mixer {self.name!r}: x must be [B, T, D], got shape {shape}")
        if cache is not None and segment_ids is not None:
            raise ValueError(f"mixer {self.name!r}: segment_ids cannot be used with a cache")
        if cache is not None and not self.causal:
            raise ValueError(f"mixer {self.name!r} is not causal: it has no decode cache")

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
