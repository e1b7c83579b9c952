"""Random problems and oracle comparisons for engine Δ (`linmix.ops.delta.delta_rule`), shared by
the op tests, the contract suite and the benchmarks."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from linmix.ops.delta import delta_rule
from linmix.testing.numerics import rel_err

B, H, K, V = 2, 2, 16, 24
FP32_TOL = 1e-4
# bf16 inputs vs the fp32 oracle on the unrounded inputs: bf16 keeps ~3 significant digits, so
# input and output rounding alone give ~1e-2 relative error; the engine itself computes in fp32.
BF16_TOL = 2e-2
# Write strengths: the usual sigmoid range, saturated writes (the transition I - beta k^T k is
# then nearly a projection), and beta in (1, 2) (negative eigenvalues, DeltaNet's allow_neg_eigval).
BETAS = {"usual": (0.05, 0.95), "near_one": (0.99, 1.0), "above_one": (1.0, 1.9)}


@functools.cache
def _noise(seed: int) -> np.ndarray:
    """Standard normals from a fixed jax.random key, cut into test tensors on the host: sampling
    every shape in JAX would compile a new sampler per shape and dominate the suite's runtime."""
    return np.asarray(jax.random.normal(jax.random.key(seed), (6, 1 << 15)))


def normal(seed: int, slot: int, shape: tuple[int, ...]) -> np.ndarray:
    return _noise(seed)[slot, : int(np.prod(shape))].reshape(shape)


def make_inputs(
    T: int,
    gated: bool,
    *,
    strength: float = 1.0,
    betas: str = "usual",
    seed: int = 0,
) -> dict[str, jax.Array | None]:
    """Random q/k/v (raw: the tests pass use_qk_l2norm=True unless they normalise k themselves),
    beta in the named range, a log-decay in about [-1.4, -0.6] * strength, an initial state."""
    lo, hi = BETAS[betas]
    beta = lo + (hi - lo) / (1.0 + np.exp(-normal(seed, 3, (B, T, H))))
    g = None
    if gated:
        g = jnp.asarray(-strength * (1.0 + 0.4 * np.tanh(normal(seed, 4, (B, T, H)))), jnp.float32)
    return dict(
        q=jnp.asarray(normal(seed, 0, (B, T, H, K)), jnp.float32),
        k=jnp.asarray(normal(seed, 1, (B, T, H, K)), jnp.float32),
        v=jnp.asarray(normal(seed, 2, (B, T, H, V)), jnp.float32),
        beta=jnp.asarray(beta, jnp.float32),
        g=g,
        initial_state=jnp.asarray(normal(seed, 5, (B, H, K, V)), jnp.float32),
    )


def segments_from_starts(T: int, starts_per_row: list[list[int]]) -> jax.Array:
    """[B, T] int32 segment ids, a new segment beginning at each listed position."""
    rows = []
    for starts in starts_per_row:
        marks = np.zeros(T, np.int32)
        marks[[s for s in starts if 0 < s < T]] = 1
        rows.append(np.cumsum(marks))
    return jnp.asarray(np.stack(rows))


@functools.partial(
    jax.jit, static_argnames=("implementation", "chunk_size", "final", "use_qk_l2norm")
)
def run_with_grads(
    inputs, segment_ids, cotangents, *, implementation, chunk_size, final, use_qk_l2norm
):
    """Outputs and input gradients (via vjp with fixed cotangents) of one configuration."""
    diff_args = {name: x for name, x in inputs.items() if x is not None}

    def f(args):
        o, S = delta_rule(
            args["q"],
            args["k"],
            args["v"],
            args["beta"],
            args.get("g"),
            initial_state=args.get("initial_state"),
            output_final_state=final,
            segment_ids=segment_ids,
            chunk_size=chunk_size,
            use_qk_l2norm=use_qk_l2norm,
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
    chunk_size: int = 16,
    final: bool = True,
    use_qk_l2norm: bool = True,
    tol: float = FP32_TOL,
    implementation: str = "xla_chunked",
    grad_tol: float | None = None,
) -> None:
    """Assert form == reference for outputs and all gradients, and that all are finite."""
    T = inputs["q"].shape[1]
    cotangents = tuple(
        jnp.asarray(normal(99, i, s)) for i, s in enumerate([(B, T, H, V), (B, H, K, V)])
    )
    kwargs = dict(segment_ids=segment_ids, cotangents=cotangents, final=final)
    kwargs.update(use_qk_l2norm=use_qk_l2norm)
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
