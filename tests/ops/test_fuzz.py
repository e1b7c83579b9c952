"""Every public op and decode step against random shapes and values: a valid call returns
finite outputs equal to the per-token reference (a decode step: to the op over one token); a
call with one defect (wrong rank, mismatched heads or batch, a gate of the wrong shape, positive
log-decays, decreasing segment ids, a chunk size that is not a power of two, a state of the
wrong shape) raises a ValueError. Never a crash of another kind, never a NaN."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from linmix.ops.attention import attention
from linmix.ops.delta import delta_rule, delta_rule_step
from linmix.ops.gla import gla, gla_step
from linmix.ops.ssm import selective_scan, selective_scan_step
from linmix.testing.numerics import rel_err

DEFECTS = ("none", "rank", "heads", "batch", "gate_shape", "positive_gate", "segments", "chunk")
TOL = 1e-4


def _segments(rng, B, T, decreasing: bool):
    seg = np.sort(rng.integers(0, 3, size=(B, T)), axis=1)
    if decreasing and T > 1:
        seg[:, 0] = seg[:, -1] + 1
    return jnp.asarray(seg, jnp.int32)


def _check(call, defect: str):
    """Valid: finite and equal to the reference. Defective: a ValueError."""
    if defect != "none":
        try:
            call("xla_chunked")
        except ValueError:
            return
        raise AssertionError(f"defect {defect!r} was accepted")
    got, want = call("xla_chunked"), call("reference")
    assert np.isfinite(np.asarray(got, np.float32)).all()
    assert rel_err(got, want) < TOL


def _draw(data):
    B = data.draw(st.integers(1, 2), "B")
    T = data.draw(st.integers(1, 40), "T")
    H = data.draw(st.integers(1, 3), "H")
    K = data.draw(st.integers(1, 6), "K")
    V = data.draw(st.integers(1, 6), "V")
    defect = data.draw(st.sampled_from(DEFECTS), "defect")
    T = max(T, 2) if defect == "segments" else T  # one token can't have decreasing ids
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), "seed"))
    return B, T, H, K, V, defect, rng


def _normal(rng, *shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)


def _qkv(rng, B, T, H, K, V, defect):
    q = _normal(rng, B, T, H, K)
    k = _normal(rng, B, T, H + (defect == "heads"), K)
    if defect == "rank":
        q = q.reshape(B, T, H * K)
    if defect == "batch":
        k = _normal(rng, B + 1, T, H, K)
    return q, k, _normal(rng, B, T, H, V)


def _chunk(defect):
    return 48 if defect == "chunk" else 16


@settings(max_examples=14, deadline=None, derandomize=True)
@given(st.data())
def test_gla_random_calls(data):
    B, T, H, K, V, defect, rng = _draw(data)
    q, k, v = _qkv(rng, B, T, H, K, V, defect)
    g = -jnp.abs(_normal(rng, B, T, H + (defect == "gate_shape")))
    if defect == "positive_gate":
        g = -g + 0.1
    seg = _segments(rng, B, T, defect == "segments")
    _check(lambda impl: gla(q, k, v, g, segment_ids=seg, chunk_size=_chunk(defect),
                            implementation=impl)[0], defect)  # fmt: skip


@settings(max_examples=14, deadline=None, derandomize=True)
@given(st.data())
def test_delta_rule_random_calls(data):
    B, T, H, K, V, defect, rng = _draw(data)
    q, k, v = _qkv(rng, B, T, H, K, V, defect)
    beta = jnp.asarray(rng.uniform(0.1, 1.0, size=(B, T, H)), jnp.float32)
    g = -jnp.abs(_normal(rng, B, T, H, *((K,) if defect == "gate_shape" else ())))
    if defect == "positive_gate":
        g = -g + 0.1
    seg = _segments(rng, B, T, defect == "segments")
    _check(lambda impl: delta_rule(q, k, v, beta, g, segment_ids=seg, use_qk_l2norm=True,
                                   chunk_size=_chunk(defect), implementation=impl)[0],
           defect)  # fmt: skip


@settings(max_examples=14, deadline=None, derandomize=True)
@given(st.data())
def test_selective_scan_random_calls(data):
    B, T, H, K, V, defect, rng = _draw(data)
    Dc, N = H * K, V
    x = _normal(rng, B, T, Dc)
    dt = _normal(rng, B + (defect == "batch"), T, Dc)
    if defect == "rank":
        x = x[..., None]
    A = -jnp.asarray(rng.uniform(0.5, 2.0, size=(Dc + (defect == "heads"), N)), jnp.float32)
    if defect == "positive_gate":
        A = -A
    Bm, C = _normal(rng, B, T, N + (defect == "gate_shape")), _normal(rng, B, T, N)
    seg = _segments(rng, B, T, defect == "segments")
    _check(lambda impl: selective_scan(x, dt, A, Bm, C, segment_ids=seg,
                                       chunk_size=_chunk(defect),
                                       implementation=impl)[0],
           defect)  # fmt: skip


@settings(max_examples=14, deadline=None, derandomize=True)
@given(st.data())
def test_attention_random_calls(data):
    B, T, H, K, V, defect, rng = _draw(data)
    if defect in ("gate_shape", "positive_gate", "chunk"):
        defect = "none"  # attention has no gates and no chunks
    q, k, v = _qkv(rng, B, T, H, K, K, defect)
    seg = _segments(rng, B, T, defect == "segments")
    names = {"xla_chunked": "xla"}  # attention's XLA form

    def call(impl):
        return attention(q, k, v, segment_ids=seg, implementation=names.get(impl, impl))

    _check(call, defect)


STEP_DEFECTS = ("none", "rank", "heads", "batch", "gate_shape", "positive_gate", "state")


def _check_step(step, full, defect: str):
    """A decode step: valid -> finite and equal to the chunked op over one token from the same
    state (output and new state); defective -> a ValueError."""
    if defect != "none":
        try:
            step()
        except ValueError:
            return
        raise AssertionError(f"defect {defect!r} was accepted")
    (o, S), (want_o, want_S) = step(), full()
    assert np.isfinite(np.asarray(o)).all() and np.isfinite(np.asarray(S)).all()
    assert rel_err(o, want_o[:, 0]) < TOL and rel_err(S, want_S) < TOL


def _draw_step(data):
    B, H, K, V = (data.draw(st.integers(1, n), name) for n, name in
                  ((2, "B"), (3, "H"), (6, "K"), (6, "V")))  # fmt: skip
    defect = data.draw(st.sampled_from(STEP_DEFECTS), "defect")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), "seed"))
    q = _normal(rng, B, H, K)
    k = _normal(rng, B + (defect == "batch"), H + (defect == "heads"), K)
    if defect == "rank":
        q = q[:, None]
    S = _normal(rng, B, H, K + (defect == "state"), V)
    return B, H, K, V, defect, rng, q, k, _normal(rng, B, H, V), S


@settings(max_examples=15, deadline=None, derandomize=True)
@given(st.data())
def test_gla_step_random_calls(data):
    B, H, K, V, defect, rng, q, k, v, S = _draw_step(data)
    g = -jnp.abs(_normal(rng, B, H + (defect == "gate_shape")))
    g = -g + 0.1 if defect == "positive_gate" else g

    def full():
        return gla(q[:, None], k[:, None], v[:, None], g[:, None], initial_state=S,
                   output_final_state=True, implementation="reference")  # fmt: skip

    _check_step(lambda: gla_step(q, k, v, g, S), full, defect)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(st.data())
def test_delta_rule_step_random_calls(data):
    B, H, K, V, defect, rng, q, k, v, S = _draw_step(data)
    beta = jnp.asarray(rng.uniform(0.1, 1.0, size=(B, H)), jnp.float32)
    g = -jnp.abs(_normal(rng, B, H, *((K,) if defect == "gate_shape" else ())))
    g = -g + 0.1 if defect == "positive_gate" else g

    def full():
        return delta_rule(q[:, None], k[:, None], v[:, None], beta[:, None], g[:, None],
                          initial_state=S, output_final_state=True, use_qk_l2norm=True,
                          implementation="reference")  # fmt: skip

    _check_step(lambda: delta_rule_step(q, k, v, beta, g, S, use_qk_l2norm=True), full, defect)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(st.data())
def test_selective_scan_step_random_calls(data):
    B, H, K, V, defect, rng, q, _, _, _ = _draw_step(data)
    Dc, N = H * K, V
    x = q.reshape(B, Dc) if defect != "rank" else q
    dt = _normal(rng, B + (defect == "batch"), Dc)
    A = -jnp.asarray(rng.uniform(0.5, 2.0, size=(Dc + (defect == "heads"), N)), jnp.float32)
    A = -A if defect == "positive_gate" else A
    Bm, C = _normal(rng, B, N + (defect == "gate_shape")), _normal(rng, B, N)
    h = _normal(rng, B, Dc, N + (defect == "state"))

    def full():
        return selective_scan(x[:, None], dt[:, None], A, Bm[:, None], C[:, None],
                              initial_state=h, output_final_state=True,
                              implementation="reference")  # fmt: skip

    _check_step(lambda: selective_scan_step(x, dt, A, Bm, C, state=h), full, defect)
