"""The kernel contract: what each implementation of an engine declares it supports, and the one
place where a request is checked against those declarations.

Every engine's `api` holds a table `{name: Capabilities}`. `select(...)` resolves
`implementation=None` to the backend's default, turns a retired name into an error naming its
successor, and refuses a request outside the chosen implementation's declaration with a
`ValueError` that names the missing capability and the implementations that have it. The contract
test suite (`tests/ops/test_contract.py`) runs every implementation from one matrix, filtered and
toleranced by the same declarations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp

# Names used before the implementations were named by their DSL and target.
RETIRED = {
    "xla": "xla_chunked",
    "chunked": "xla_chunked",
    "pallas_tpu": "pallas_mosaic_tpu",
    "pallas_gpu": "pallas_triton",
    "mosaic_gpu": "pallas_mosaic_gpu",
    "triton": "jax_triton",
}

ALL_DTYPES = ("float32", "bfloat16", "float16")
ALL_GATES = ("none", "scalar", "vector")


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Relative-RMS error bounds against the fp32 per-token reference, output and gradients."""

    out: float
    grad: float


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What one implementation of an engine supports.

    dtypes: input dtypes of q, k, v (one dtype for all three unless `mixed_dtypes`).
    gates: gate kinds: 'none', 'scalar' ([B, T, H]) and/or 'vector' ([B, T, H, K]).
    segments, states: packed `segment_ids`; `initial_state` / `output_final_state`.
    bidirectional, normalize: `causal=False`; the denominator normaliser (engine L only).
    max_key_dim, max_value_dim: largest K, V (None: any).
    chunk_sizes: the chunk lengths it runs (None: the op's `chunk_size`, any power of two; a
      tuple: it picks its own from these, whatever `chunk_size` says).
    backward: reverse-mode gradients (all of q, k, v, gates, initial state).
    kernel: a compiled kernel (interpret mode on a CPU backend); native: the backends it
      compiles for.
    tolerance: error bounds per dtype name, what the contract tests hold it to.
    """

    dtypes: tuple[str, ...] = ALL_DTYPES
    gates: tuple[str, ...] = ALL_GATES
    segments: bool = True
    states: bool = True
    bidirectional: bool = False
    normalize: bool = True
    max_key_dim: int | None = None
    max_value_dim: int | None = None
    chunk_sizes: tuple[int, ...] | None = None
    backward: bool = True
    mixed_dtypes: bool = True
    kernel: bool = False
    native: tuple[str, ...] = ("cpu", "gpu", "tpu")
    tolerance: Mapping[str, Tolerance] = dataclasses.field(
        default_factory=lambda: {
            # 16-bit: against the oracle on the same rounded inputs (rounded output and grads)
            "float32": Tolerance(1e-4, 1e-4),
            "bfloat16": Tolerance(1e-2, 1e-2),
            "float16": Tolerance(1e-2, 1e-2),
        }
    )


@dataclasses.dataclass(frozen=True)
class Request:
    """What a call asks of an implementation."""

    dtypes: tuple[str, ...]
    gate: str
    segments: bool
    states: bool
    bidirectional: bool = False
    normalize: bool = False
    key_dim: int = 0
    value_dim: int = 0


def gate_kind(g: jax.Array | None) -> str:
    """'none', 'scalar' ([B, T, H]) or 'vector' ([B, T, H, K])."""
    if g is None:
        return "none"
    return "scalar" if g.ndim == 3 else "vector"


def dtype_name(x: jax.Array) -> str:
    return jnp.dtype(x.dtype).name


def missing(caps: Capabilities, req: Request) -> list[str]:
    """The capabilities `req` needs that `caps` lacks, each as a short phrase."""
    out = []
    bad = [d for d in req.dtypes if d not in caps.dtypes]
    if bad:
        out.append(f"dtype {bad[0]} (it takes {', '.join(caps.dtypes)})")
    elif not caps.mixed_dtypes and len(set(req.dtypes)) > 1:
        out.append(f"mixed dtypes {'/'.join(req.dtypes)} (q, k, v must share one)")
    if req.gate not in caps.gates:
        out.append(f"{req.gate} gates")
    if req.segments and not caps.segments:
        out.append("segment_ids")
    if req.states and not caps.states:
        out.append("initial_state / output_final_state")
    if req.bidirectional and not caps.bidirectional:
        out.append("causal=False")
    if req.normalize and not caps.normalize:
        out.append("normalize=True")
    if caps.max_key_dim is not None and req.key_dim > caps.max_key_dim:
        out.append(f"key dim {req.key_dim} (at most {caps.max_key_dim})")
    if caps.max_value_dim is not None and req.value_dim > caps.max_value_dim:
        out.append(f"value dim {req.value_dim} (at most {caps.max_value_dim})")
    return out


def select(
    engine: str,
    table: Mapping[str, Capabilities],
    implementation: str | None,
    req: Request,
    defaults: Mapping[str, str],
    backend: str | None = None,
) -> str:
    """The implementation to run: `implementation`, or the backend's default when None.

    Raises ValueError for an unknown or retired name, and for a request the implementation does
    not support (naming what is missing and which implementations support the request).
    """
    if implementation is None:
        implementation = defaults.get(backend or jax.default_backend(), "xla_chunked")
        if missing(table[implementation], req):  # the default can't: the chunked XLA form
            implementation = "xla_chunked"
    if implementation in RETIRED and implementation not in table:
        raise ValueError(
            f"{engine}: implementation {implementation!r} is now called {RETIRED[implementation]!r}"
        )
    if implementation not in table:
        raise ValueError(
            f"{engine}: implementation must be one of {tuple(table)} or None, "
            f"got {implementation!r}"
        )
    lacks = missing(table[implementation], req)
    if lacks:
        able = [name for name, caps in table.items() if not missing(caps, req)]
        raise ValueError(
            f"{engine}: implementation {implementation!r} does not support "
            f"{'; '.join(lacks)}; implementations that support this call: {able}"
        )
    return implementation
