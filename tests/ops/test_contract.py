"""The kernel contract suite: every implementation of engines L and Δ against the per-token oracle,
from one matrix of problems, outputs and all gradients.

An implementation runs every case its declaration (`CAPABILITIES` in the engine's api) supports,
held to the tolerance it declares for the case's dtype; kernels run in interpret mode on a CPU
(natively under `pytest -m gpu` / on a TPU). 16-bit cases compare against the oracle on the same
rounded inputs. The cases it does not support must be refused with the capability error, which
names what is missing and the implementations that have it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from linmix.ops.common import contract
from linmix.ops.delta import api as delta_api
from linmix.ops.delta import delta_rule
from linmix.ops.gla import api as gla_api
from linmix.ops.gla import gla
from linmix.testing import delta as delta_testing
from linmix.testing import gla as gla_testing


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    T: int
    gate: str  # "none" | "scalar" | "vector"
    dtype: str = "float32"
    starts: tuple[tuple[int, ...], ...] | None = None  # segment starts per batch row
    states: bool = True  # initial and final state
    chunk_size: int = 16
    strength: float = 1.0
    causal: bool = True


# One matrix for every implementation: odd lengths, lengths below / across / not a multiple of the
# chunk, chunk sizes 16 to 64, every gate kind from weak to very strong, packed segments with
# starts on and off chunk edges, with and without states, fp32 / bf16 / f16, bidirectional.
CASES = [
    Case("odd_T_no_gate", 37, "none"),
    Case("one_token_scalar", 1, "scalar", starts=((), ())),
    Case("scalar_segments_C32", 100, "scalar", starts=((1, 32, 50), (64,)), chunk_size=32),
    Case("weak_scalar_no_state", 70, "scalar", states=False, strength=0.01),
    Case("vector_segments", 70, "vector", starts=((3, 16), (64,))),
    Case("strong_vector_C64", 130, "vector", strength=20.0, chunk_size=64),
    Case("bf16_scalar_segments", 130, "scalar", "bfloat16", ((1, 16, 64, 100), (50,)), True, 64),
    Case("bf16_vector", 65, "vector", "bfloat16"),
    Case("f16_no_gate_segments", 64, "none", "float16", ((10, 40), ()), False, 64),
    Case("bidirectional_scalar", 40, "scalar", starts=((3, 16), ()), causal=False),
]


def request(case: Case, engine: str) -> contract.Request:
    K, V = (gla_testing.K, gla_testing.V) if engine == "gla" else (delta_testing.K, delta_testing.V)
    return contract.Request(
        dtypes=(case.dtype,) * (3 if engine == "gla" else 1),
        gate=case.gate,
        segments=case.starts is not None,
        states=case.states,
        bidirectional=not case.causal,
        key_dim=K,
        value_dim=V,
    )


def matrix(engine: str, supported: bool) -> list:
    """(implementation, case) pairs the declarations accept (or refuse), as pytest params."""
    table = gla_api.CAPABILITIES if engine == "gla" else delta_api.CAPABILITIES
    pairs = []
    for impl, caps in table.items():
        if impl == "reference":
            continue
        for case in CASES:
            if engine == "delta" and (case.gate == "vector" or not case.causal):
                continue  # not an engine-Δ problem at all (the op's validation refuses it)
            if (not contract.missing(caps, request(case, engine))) == supported:
                pairs.append(pytest.param(impl, case, id=f"{impl}-{case.name}"))
    return pairs


def _cast(inputs: dict, dtype: str) -> dict:
    return {n: (x.astype(dtype) if n in ("q", "k", "v") else x) for n, x in inputs.items()}


def _segments(case: Case, testing):
    if case.starts is None:
        return None
    return testing.segments_from_starts(case.T, [list(s) for s in case.starts])


@pytest.mark.parametrize(("implementation", "case"), matrix("gla", supported=True))
def test_gla_matches_reference(implementation: str, case: Case) -> None:
    gate = None if case.gate == "none" else case.gate
    inputs = gla_testing.make_inputs(case.T, gate, strength=case.strength, seed=case.T)
    if not case.states:
        inputs["initial_state"] = None
    tol = gla_api.CAPABILITIES[implementation].tolerance[case.dtype]
    gla_testing.compare(
        _cast(inputs, case.dtype),
        segment_ids=_segments(case, gla_testing),
        causal=case.causal,
        chunk_size=case.chunk_size,
        final=case.states,
        tol=tol.out,
        grad_tol=tol.grad,
        implementation=implementation,
    )


@pytest.mark.parametrize(("implementation", "case"), matrix("delta", supported=True))
def test_delta_matches_reference(implementation: str, case: Case) -> None:
    inputs = delta_testing.make_inputs(
        case.T, case.gate == "scalar", strength=case.strength, seed=case.T
    )
    if not case.states:
        inputs["initial_state"] = None
    tol = delta_api.CAPABILITIES[implementation].tolerance[case.dtype]
    delta_testing.compare(
        _cast(inputs, case.dtype),
        segment_ids=_segments(case, delta_testing),
        chunk_size=case.chunk_size,
        final=case.states,
        tol=tol.out,
        grad_tol=tol.grad,
        implementation=implementation,
    )


def _call(engine: str, implementation: str, case: Case):
    if engine == "gla":
        gate = None if case.gate == "none" else case.gate
        x = _cast(gla_testing.make_inputs(case.T, gate, seed=1), case.dtype)
        state = x["initial_state"] if case.states else None
        return lambda: gla(
            x["q"], x["k"], x["v"], x["g"], initial_state=state, causal=case.causal,
            segment_ids=_segments(case, gla_testing), implementation=implementation,
        )  # fmt: skip
    x = _cast(delta_testing.make_inputs(case.T, case.gate == "scalar", seed=1), case.dtype)
    state = x["initial_state"] if case.states else None
    return lambda: delta_rule(
        x["q"], x["k"], x["v"], x["beta"], x["g"], initial_state=state,
        segment_ids=_segments(case, delta_testing), implementation=implementation,
    )  # fmt: skip


@pytest.mark.parametrize("engine", ["gla", "delta"])
def test_unsupported_requests_raise_the_capability_error(engine: str) -> None:
    """Every (implementation, case) the declarations refuse is refused by the op itself, with an
    error naming the missing capability and the implementations that support the call."""
    refused = matrix(engine, supported=False)
    assert refused, "the matrix exercises no refusal"
    for param in refused:
        implementation, case = param.values
        with pytest.raises(ValueError, match="does not support") as info:
            _call(engine, implementation, case)()
        message = str(info.value)
        assert "implementations that support this call" in message and "xla_chunked" in message


def test_capability_error_names_the_missing_capability() -> None:
    bf16 = jnp.zeros((1, 8, 1, 192), jnp.bfloat16)
    with pytest.raises(ValueError, match="key dim 192 \\(at most 128\\)"):
        gla(bf16, bf16, bf16, implementation="pallas_mosaic_gpu")
    f32 = jnp.zeros((1, 8, 1, 16))
    with pytest.raises(ValueError, match="dtype float32 \\(it takes bfloat16, float16\\)"):
        gla(f32, f32, f32, implementation="pallas_mosaic_gpu")
    with pytest.raises(ValueError, match="mixed dtypes"):
        gla(f32, f32, f32.astype(jnp.bfloat16), implementation="jax_triton")


@pytest.mark.parametrize(
    ("old", "new"),
    [("xla", "xla_chunked"), ("pallas_tpu", "pallas_mosaic_tpu"), ("pallas_gpu", "pallas_triton"),
     ("mosaic_gpu", "pallas_mosaic_gpu"), ("triton", "jax_triton")],
)  # fmt: skip
def test_retired_names_name_their_successor(old: str, new: str) -> None:
    q = jnp.zeros((1, 4, 1, 16))
    with pytest.raises(ValueError, match=f"'{old}' is now called '{new}'"):
        gla(q, q, q, implementation=old)
    with pytest.raises(ValueError, match=f"'{old}' is now called '{new}'"):
        delta_rule(q, q, q, jnp.ones((1, 4, 1)), implementation=old)


def test_default_implementation_follows_the_declarations() -> None:
    """None is the backend's default when it supports the call, else the chunked XLA form."""
    fp32 = request(CASES[0], "gla")
    table, defaults = gla_api.CAPABILITIES, {"tpu": "pallas_mosaic_tpu", "gpu": "pallas_mosaic_gpu"}
    assert contract.select("gla", table, None, fp32, defaults, backend="tpu") == "pallas_mosaic_tpu"
    assert contract.select("gla", table, None, fp32, defaults, backend="gpu") == "xla_chunked"
    bf16 = dataclasses.replace(fp32, dtypes=("bfloat16",) * 3)
    assert contract.select("gla", table, None, bf16, defaults, backend="gpu") == "pallas_mosaic_gpu"
    assert contract.select("gla", table, None, fp32, defaults, backend="cpu") == "xla_chunked"
    assert jax.default_backend() != "cpu" or gla_api.default_implementation() == "xla_chunked"


def test_every_implementation_is_in_the_matrix() -> None:
    for engine, table in (("gla", gla_api.CAPABILITIES), ("delta", delta_api.CAPABILITIES)):
        ran = {p.values[0] for p in matrix(engine, supported=True)}
        assert ran == set(table) - {"reference"}, engine
