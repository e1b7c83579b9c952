"""Selective scan (Mamba-1 S6): every form vs the per-token oracle, semantics and validation."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linmix.ops.ssm import selective_scan
from linmix.ops.ssm.scan import MAX_STATE_BYTES
from linmix.testing.numerics import rel_err
from linmix.testing.ssm import Bt, Dc, N, make_inputs

FP32_TOL = 1e-4
# bf16 inputs vs the fp32 oracle on the unrounded inputs: bf16 keeps ~3 significant digits, so
# input and output rounding alone give ~1e-2 relative error; the scan itself computes in fp32.
BF16_TOL = 2e-2
FORMS = ["xla_chunked", "associative_scan"]


def segments_from_starts(T: int, starts_per_row: list[list[int]]) -> jax.Array:
    """[B, T] int32 segment ids, a new segment beginning at each listed position."""
    rows = []
    for starts in starts_per_row:
        marks = np.zeros(T, np.int32)
        marks[[s for s in starts if 0 < s < T]] = 1
        rows.append(np.cumsum(marks))
    return jnp.asarray(np.stack(rows))


@functools.partial(
    jax.jit, static_argnames=("implementation", "chunk_size", "final", "dt_softplus")
)
def run_with_grads(
    inputs, segment_ids, cotangents, *, implementation, chunk_size, final, dt_softplus=True
):
    """Outputs and gradients w.r.t. every array input (vjp with fixed random cotangents)."""
    args = {name: v for name, v in inputs.items() if v is not None}

    def f(args):
        y, h = selective_scan(
            args["x"], args["dt"], args["A"], args["B"], args["C"], args.get("D"), args.get("z"),
            dt_bias=args.get("dt_bias"), dt_softplus=dt_softplus,
            initial_state=args.get("initial_state"), output_final_state=final,
            segment_ids=segment_ids, chunk_size=chunk_size, implementation=implementation,
        )  # fmt: skip
        return (y, h) if final else (y,)

    outs, vjp = jax.vjp(f, args)
    (grads,) = vjp(tuple(ct.astype(o.dtype) for ct, o in zip(cotangents, outs, strict=False)))
    return outs, grads


def compare(
    inputs: dict[str, jax.Array | None],
    *,
    segment_ids: jax.Array | None = None,
    chunk_size: int = 16,
    final: bool = True,
    dt_softplus: bool = True,
    tol: float = FP32_TOL,
    implementation: str = "xla_chunked",
) -> tuple:
    """Assert form == reference for outputs and all gradients, and that everything is finite.
    Returns the form's (outputs, gradients)."""
    T = inputs["x"].shape[1]
    rng = np.random.default_rng(99)
    cotangents = tuple(
        jnp.asarray(rng.normal(size=s), jnp.float32) for s in [(Bt, T, Dc), (Bt, Dc, N)]
    )
    kw = dict(segment_ids=segment_ids, cotangents=cotangents, final=final, dt_softplus=dt_softplus)
    got = run_with_grads(inputs, implementation=implementation, chunk_size=chunk_size, **kw)
    fp32 = {k: None if v is None else v.astype(jnp.float32) for k, v in inputs.items()}
    want = run_with_grads(fp32, implementation="reference", chunk_size=16, **kw)
    for name, a, b in zip(("y", "final_state"), got[0], want[0], strict=False):
        assert np.isfinite(np.asarray(a, np.float32)).all(), name
        assert rel_err(a, b) < tol, (name, rel_err(a, b))
    assert got[1].keys() == want[1].keys()
    for name in want[1]:
        a, b = got[1][name], want[1][name]
        assert np.isfinite(np.asarray(a, np.float32)).all(), f"grad {name}"
        assert rel_err(a, b) < tol, (f"grad {name}", rel_err(a, b))
    return got


@pytest.mark.parametrize(
    ("implementation", "T"),
    # Lengths around the chunk edge matter to the chunked form only; the whole-sequence scan
    # gets the edge cases (one token, a non-power-of-two length).
    [*(("xla_chunked", T) for T in (1, 63, 64, 65, 200)), ("associative_scan", 1)]
    + [("associative_scan", 200)],
)
def test_matches_reference(implementation: str, T: int) -> None:
    compare(make_inputs(T), chunk_size=16, implementation=implementation)


@pytest.mark.parametrize("chunk_size", [32, 64, 128])
def test_chunk_sizes_match_reference(chunk_size: int) -> None:
    """T = 200 is 1 9/16 chunks of 128 and 6 1/4 of 32 (16 is the default of the other tests);
    segment starts on and off chunk edges."""
    T = 200
    segment_ids = segments_from_starts(T, [[1, 32, 50, 128, 199], [100]])
    compare(make_inputs(T, seed=1), segment_ids=segment_ids, chunk_size=chunk_size)


def random_segments(T: int, n_ids: int = 8, seed: int = 7) -> jax.Array:
    """[B, T] sorted random ids: segments of random lengths, some of one token, some empty."""
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.sort(rng.integers(0, n_ids, size=(Bt, T)), axis=1), jnp.int32)


@pytest.mark.parametrize(("strength", "segments"), [("weak", "fixed"), ("strong", "random")])
@pytest.mark.parametrize("implementation", FORMS)
def test_decay_strengths_and_segments(implementation: str, strength: str, segments: str) -> None:
    """Weak decays keep the whole state over 130 tokens, strong ones forget it within a token or
    two; segment starts on chunk edges (16, 32), off them, and at random places."""
    T = 130
    if segments == "fixed":
        segment_ids = segments_from_starts(T, [[16, 40, 64], [33, 129]])
    else:
        segment_ids = random_segments(T)
        assert len(np.unique(segment_ids[0])) > 2
    inputs = make_inputs(T, strength=strength, seed=2)
    compare(inputs, segment_ids=segment_ids, chunk_size=32, implementation=implementation)


OPTIONS = {
    "ungrouped": dict(groups=None),
    "one_group_per_channel": dict(groups=Dc),
    "no_skip_no_gate": dict(skip=False, gate=False),
}


@pytest.mark.parametrize("option", OPTIONS)
def test_options_match_reference(option: str) -> None:
    """Grouping, D and z are handled by code shared by every form (`ssm.common`), so one form
    suffices here; the other tests run both forms with grouped B, C and with D and z."""
    compare(make_inputs(70, seed=3, **OPTIONS[option]))


def test_raw_dt_without_bias_or_state() -> None:
    """dt_softplus=False takes dt (> 0 here) as delta; no bias, no initial or final state."""
    inputs = make_inputs(70, seed=4)
    inputs.update(dt=jnp.abs(inputs["dt"]), dt_bias=None, initial_state=None)
    compare(inputs, dt_softplus=False, final=False, chunk_size=32)


def test_packed_equals_separate_documents() -> None:
    """Packing documents with segment_ids == running each document on its own."""
    T = 70
    starts = [0, 9, 16, 50, 51]  # includes a chunk-edge start (16) and a one-token document
    segment_ids = segments_from_starts(T, [starts] * Bt)
    p = make_inputs(T, seed=6)
    seq = ("x", "dt", "B", "C", "z")
    y, h = _chunked_jit(p, segment_ids)
    bounds = [*starts, T]
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        doc = {k: v[:, lo:hi] if k in seq else v for k, v in p.items()}
        doc["initial_state"] = p["initial_state"] if i == 0 else None
        y_doc, h_doc = _reference_jit(doc)
        assert rel_err(y[:, lo:hi], y_doc) < FP32_TOL, (lo, hi)
    assert rel_err(h, h_doc) < FP32_TOL


@jax.jit
def _reference_jit(p):
    return selective_scan(**p, output_final_state=True, implementation="reference")


@jax.jit
def _chunked_jit(p, segment_ids):
    return selective_scan(**p, output_final_state=True, segment_ids=segment_ids, chunk_size=16)


@pytest.mark.parametrize("implementation", FORMS)
def test_bf16_close_to_fp32_reference(implementation: str) -> None:
    """bf16 x, dt, B, C, z (fp32 A, D, bias, state; fp32 math inside) vs the fp32 oracle on the
    same values: outputs, final state and every gradient within BF16_TOL, gradients in bf16."""
    inputs = make_inputs(65, seed=8)
    for name in ("x", "dt", "B", "C", "z"):
        inputs[name] = inputs[name].astype(jnp.bfloat16)
    (y, _), grads = compare(inputs, chunk_size=32, tol=BF16_TOL, implementation=implementation)
    assert y.dtype == jnp.bfloat16
    assert all(grads[k].dtype == jnp.bfloat16 for k in ("x", "dt", "B", "C", "z"))


@pytest.mark.parametrize("implementation", FORMS)
def test_extreme_decay_is_finite(implementation: str) -> None:
    """delta |A| ~ 1e4 per step: every decay underflows to 0, nothing overflows, in fwd and
    grads, and the state is just the current token's write."""
    p = make_inputs(40, seed=9, skip=False, gate=False)
    p["A"] = 1e4 * p["A"]

    def loss(p):
        y, h = selective_scan(**p, output_final_state=True, implementation=implementation)
        return jnp.sum(y**2) + jnp.sum(h**2), y

    grads, y = jax.jit(jax.grad(loss, has_aux=True))(p)
    for name, g in grads.items():
        if g is not None:
            assert np.isfinite(np.asarray(g)).all(), name
    delta_BTD = jax.nn.softplus(p["dt"] + p["dt_bias"][None, None])
    BC_BTG = jnp.sum(p["B"] * p["C"], axis=-1)
    want = delta_BTD * p["x"] * jnp.repeat(BC_BTG, Dc // BC_BTG.shape[-1], axis=2)
    assert rel_err(y, want) < FP32_TOL


def test_reference_matches_float64_loop() -> None:
    """The oracle itself vs a plain NumPy float64 loop over tokens, channels and groups."""
    T = 23
    p = make_inputs(T, groups=3, seed=10)
    segment_ids = segments_from_starts(T, [[5, 6], [12]])
    y, h = selective_scan(
        **p, output_final_state=True, segment_ids=segment_ids, implementation="reference"
    )
    n = {k: np.asarray(v, np.float64) for k, v in p.items()}
    seg = np.asarray(segment_ids)
    delta = np.logaddexp(0.0, n["dt"] + n["dt_bias"])  # softplus
    y_want = np.zeros((Bt, T, Dc))
    h_want = n["initial_state"].copy()
    for b in range(Bt):
        for t in range(T):
            if t > 0 and seg[b, t] != seg[b, t - 1]:
                h_want[b] = 0.0
            for d in range(Dc):
                g = d // (Dc // 3)
                dA = np.exp(delta[b, t, d] * n["A"][d])
                h_want[b, d] = (
                    dA * h_want[b, d] + delta[b, t, d] * n["x"][b, t, d] * n["B"][b, t, g]
                )
                out = n["C"][b, t, g] @ h_want[b, d] + n["D"][d] * n["x"][b, t, d]
                y_want[b, t, d] = out * n["z"][b, t, d] / (1 + np.exp(-n["z"][b, t, d]))
    assert rel_err(y, y_want) < 1e-5 and rel_err(h, h_want) < 1e-5


def test_defaults_and_output_types() -> None:
    p = make_inputs(5)
    args = [p[k].astype(jnp.bfloat16) for k in ("x", "dt", "A", "B", "C")]
    y, h = jax.eval_shape(selective_scan, *args)
    assert y.shape == (Bt, 5, Dc) and y.dtype == jnp.bfloat16 and h is None
    _, h = jax.eval_shape(lambda *a: selective_scan(*a, output_final_state=True), *args)
    assert h.shape == (Bt, Dc, N) and h.dtype == jnp.float32


def test_associative_scan_refuses_states_over_the_limit() -> None:
    T = MAX_STATE_BYTES // (Bt * Dc * N * 4) + 1
    x = jax.ShapeDtypeStruct((Bt, T, Dc), jnp.float32)
    BC = jax.ShapeDtypeStruct((Bt, T, N), jnp.float32)
    A = jnp.ones((Dc, N))

    def run(x, B):
        return selective_scan(x, x, -A, B, B, implementation="associative_scan")

    with pytest.raises(ValueError, match="implementation='xla_chunked'"):
        jax.eval_shape(run, x, BC)
    # The chunked form takes the same problem.
    jax.eval_shape(lambda x, B: selective_scan(x, x, -A, B, B), x, BC)


def _bad_inputs() -> list[tuple[str, dict]]:
    T = 8
    x = jnp.ones((Bt, T, Dc))
    BC = jnp.ones((Bt, T, N))
    ok = dict(x=x, dt=x, A=-jnp.ones((Dc, N)), B=BC, C=BC)
    return [
        ("x rank", dict(ok, x=jnp.ones((Bt, T)))),
        ("dt shape", dict(ok, dt=jnp.ones((Bt, T + 1, Dc)))),
        ("A rank", dict(ok, A=-jnp.ones((Dc,)))),
        ("A channels", dict(ok, A=-jnp.ones((Dc + 1, N)))),
        ("A complex", dict(ok, A=-jnp.ones((Dc, N), jnp.complex64))),
        ("B state size", dict(ok, B=jnp.ones((Bt, T, N + 1)))),
        ("B time", dict(ok, B=jnp.ones((Bt, T + 1, N)))),
        ("B rank", dict(ok, B=jnp.ones((Bt, T, 1, 1, N)))),
        ("C shape", dict(ok, C=jnp.ones((Bt, T, 2, N)))),
        ("groups", dict(ok, B=jnp.ones((Bt, T, 4, N)), C=jnp.ones((Bt, T, 4, N)))),
        ("D shape", dict(ok, D=jnp.ones((Dc, 1)))),
        ("z shape", dict(ok, z=jnp.ones((Bt, T, Dc + 1)))),
        ("dt_bias shape", dict(ok, dt_bias=jnp.ones((Bt, Dc)))),
        ("state shape", dict(ok, initial_state=jnp.ones((Bt, N, Dc)))),
        ("state dtype", dict(ok, initial_state=jnp.ones((Bt, Dc, N), jnp.int32))),
        ("segment shape", dict(ok, segment_ids=jnp.zeros((Bt, T - 1), jnp.int32))),
        ("segment dtype", dict(ok, segment_ids=jnp.zeros((Bt, T), jnp.float32))),
        ("chunk not pow2", dict(ok, chunk_size=48)),
        ("chunk zero", dict(ok, chunk_size=0)),
        ("chunk bool", dict(ok, chunk_size=True)),
        ("implementation", dict(ok, implementation="pallas")),
        ("positive A", dict(ok, A=jnp.ones((Dc, N)))),
        ("decreasing segments", dict(ok, segment_ids=jnp.array([[0, 0, 1, 1, 2, 1, 2, 2]] * Bt))),
    ]


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
def test_validation_errors(case: tuple[str, dict]) -> None:
    with pytest.raises(ValueError):
        selective_scan(**case[1])


def test_unknown_implementation_names_choices() -> None:
    p = make_inputs(2)
    with pytest.raises(ValueError, match="xla_chunked"):
        selective_scan(p["x"], p["dt"], p["A"], p["B"], p["C"], implementation="xla")
