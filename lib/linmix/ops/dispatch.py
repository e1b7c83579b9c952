"""Which implementation the engines run inside a model, per engine.

    with use_implementations({"gla": "pallas_mosaic_gpu", "delta": "pallas_triton"}):
        logits = model(tokens)        # every whole-sequence engine call picks its kernel

`ModelConfig.implementations` sets this for the LM (`--config.model.implementations.gla=...`).
Engines left out keep `implementation=None`, the backend's default. Decode steps have a single
form and are not affected.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Mapping


def engines() -> dict[str, tuple[str, ...]]:
    """Engine name -> the implementations its op accepts."""
    from linmix.ops import delta, gla, ssm

    return {"gla": gla.IMPLEMENTATIONS, "delta": delta.IMPLEMENTATIONS, "ssm": ssm.IMPLEMENTATIONS}


def check(mapping: Mapping[str, str]) -> None:
    """Raise ValueError naming an unknown engine or an implementation its op does not have."""
    known = engines()
    for engine, impl in mapping.items():
        if engine not in known:
            raise ValueError(f"implementations: unknown engine {engine!r}; known: {sorted(known)}")
        if impl not in known[engine]:
            raise ValueError(
                f"implementations: engine {engine!r} has no implementation {impl!r}; "
                f"it has {known[engine]}"
            )


_CURRENT: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "linmix_implementations", default=()
)


@contextlib.contextmanager
def use_implementations(mapping: Mapping[str, str]):
    """Run the engines named in `mapping` with the given implementations inside."""
    check(mapping)
    token = _CURRENT.set(tuple(mapping.items()))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def implementation(engine: str) -> dict:
    """`{"implementation": name}` for the enclosing `use_implementations`, or {} (the default)."""
    impl = dict(_CURRENT.get()).get(engine)
    return {} if impl is None else {"implementation": impl}
