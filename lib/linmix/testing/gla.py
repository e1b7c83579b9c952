"""Random problems and oracle comparisons for engine L (`linmix.ops.gla.gla`), shared by the op
tests, the contract suite and the benchmarks."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from linmix.ops.gla import gla
from linmix.testing.numerics import rel_err

B, H, K, V = 2, 2, 8, 12
FP32_TOL = 1e-4
# bf16 inputs vs the fp32 oracle on the unrounded inputs: bf16 keeps ~3 significant digits, so
# input and output rounding alone give ~1e-2 relative error; the engine itself computes in fp32.
BF16_TOL = 2e-2


@functools.cache
def _noise(seed: int) -> np.ndarray:
    """Standard normals from a fixed jax.random key, cut into test tensors on the host: sampling
    every shape in JAX would compile a new sampler per shape and dominate the suite's runtime."""
    return np.asarray(jax.random.normal(jax.random.key(seed), (5, 1 << 14)))


def normal(seed: int, slot: int, shape: tuple[int, ...]) -> np.ndarray:
    return _noise(seed)[slot, : int(np.prod(shape))].reshape(shape)


def make_inputs(
    T: int,
    gate: str | None,
    *,
    strength: float = 1.0,
    seed: int = 0,
) -> dict[str, jax.Array | None]:
    """Random q/k/v, a log-decay gate of the given kind in about [-1.4, -0.6] * strength (never
    zero, so every token decays), and a random initial state."""
    g = None
    if gate is not None:
        shape = (B, T, H) if gate == "scalar" else (B, T, H, K)
        g = jnp.asarray(-strength * (1.0 + 0.4 * np.tanh(normal(seed, 3, shape))), jnp.float32)
    return dict(
        q=jnp.asarray(normal(seed, 0, (B, T, H, K)), jnp.float32),
        k=jnp.asarray(normal(seed, 1, (B, T, H, K)), jnp.float32),
        v=jnp.asarray(normal(seed, 2, (B, T, H, V)), jnp.float32),
        g=g,
        initial_state=jnp.asarray(normal(seed, 4, (B, H, K, V)), jnp.float32),
    )


def segments_from_starts(T: int, starts_per_row: list[list[int]]) -> jax.Array:
    """[B, T] int32 segment ids, a new segment beginning at each listed position."""
    rows = []
    for starts in starts_per_row:
        marks = np.zeros(T, np.int32)
        marks[[s for s in starts if 0 < s < T]] = 1
        rows.append(np.cumsum(marks))
    return jnp.asarray(np.stack(rows))


@functools.partial(jax.jit, static_argnames=("implementation", "causal", "chunk_size", "final"))
def run_with_grads(inputs, segment_ids, cotangents, *, implementation, causal, chunk_size, final):
    """Outputs and input gradients (via vjp with fixed cotangents) of one gla configuration."""
    diff_args = {name: x for name, x in inputs.items() if x is not None}

    def f(args):
        o, S = gla(
            args["q"],
            args["k"],
            args["v"],
            args.get("g"),
            initial_state=args.get("initial_state"),
            output_final_state=final,
            segment_ids=segment_ids,
            causal=causal,
            chunk_size=chunk_size,
            implementation=implementation,
        )
        return (o, S) if final else (o,)

    outs, vjp = jax.vjp(f, diff_args)
    (grads,) = vjp(tuple(c.astype(o.dtype) for c, o in zip(cotangents, outs, strict=False)))
    return outs, grads


def compare(
    inputs: dict[str, jax.Array | None],
    *,
    segment_ids: jax.Array | None = None,
    causal: bool = True,
    chunk_size: int = 16,
    final: bool = True,
    tol: float = FP32_TOL,
    implementation: str = "xla_chunked",
    grad_tol: float | None = None,
) -> None:
    """Assert form == reference for outputs and all gradients, and that everything is finite."""
    if not causal:
        inputs = {**inputs, "initial_state": None}
        final = False
    T = inputs["q"].shape[1]
    cotangents = tuple(
        jnp.asarray(normal(99, i, s)) for i, s in enumerate([(B, T, H, V), (B, H, K, V)])
    )
    kwargs = dict(segment_ids=segment_ids, cotangents=cotangents, causal=causal, final=final)
    got = run_with_grads(inputs, implementation=implementation, chunk_size=chunk_size, **kwargs)
    want = run_with_grads(inputs, implementation="reference", chunk_size=16, **kwargs)
    for name, a, b in zip(("o", "final_state")[: len(want[0])], got[0], want[0], strict=True):
        assert np.isfinite(np.asarray(a, np.float32)).all(), name
        assert rel_err(a, b) < tol, (name, rel_err(a, b))
    for name in want[1]:
        a, b = got[1][name], want[1][name]
        assert np.isfinite(np.asarray(a, np.float32)).all(), f"grad {name}"
        bound = tol if grad_tol is None else grad_tol
        assert rel_err(a, b) < bound, (f"grad {name}", rel_err(a, b))


def check_inference_forward(
    inputs: dict, implementation: str, states: str, *, tol: float = FP32_TOL, **kwargs
) -> None:
    """A kernel's forward when not differentiated: the oracle's outputs (within tol), the
    differentiated forward's bit for bit, and no chunk-state kernel output of type `states`
    (e.g. 'f32[4,4,16,16]') in its jaxpr, while the differentiated one has it."""
    args = [inputs[n] for n in "qkvg"]
    kwargs = dict(initial_state=inputs["initial_state"], output_final_state=True, **kwargs)

    def run(q, k, v, g):
        return gla(q, k, v, g, implementation=implementation, **kwargs)

    o, S = jax.jit(run)(*args)
    o_ref, S_ref = gla(*args, initial_state=inputs["initial_state"], output_final_state=True,
                       implementation="reference")  # fmt: skip
    assert rel_err(o, o_ref) < tol and rel_err(S, S_ref) < tol
    (o_diff, S_diff), _ = jax.vjp(run, *args)
    np.testing.assert_array_equal(np.asarray(o, np.float32), np.asarray(o_diff, np.float32))
    np.testing.assert_array_equal(S, S_diff)
    assert states not in str(jax.make_jaxpr(run)(*args))
    assert states in str(jax.make_jaxpr(lambda *a: jax.vjp(run, *a))(*args))
