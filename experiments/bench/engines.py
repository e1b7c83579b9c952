"""What the op benchmark (`ops.py`) runs: one entry per gate kind of every engine.

A kind names the engine and its gate: engine L (`linmix.ops.gla`) 'none' / 'scalar' / 'vector',
engine Δ (`linmix.ops.delta`) 'delta' (DeltaNet) / 'gated_delta' (Gated DeltaNet), and the Mamba-1
selective scan (`linmix.ops.ssm`) 'selective'. Each kind lists its forms (the `implementation=`
names; the first is the per-token reference, `chunked` the default chunked form), builds random
inputs for the common shape (B, T, H, K, V) and gives the jittable forward of a form.

Inputs: q, k, v ~ N(0, 1); log-decays log_sigmoid(N(0, 1)) / 16 < 0 (GLA's range); delta-rule
keys and queries L2-normalised in the op, beta = sigmoid(N(0, 1)); the selective scan gets
H * V channels with `--ssm-state` state elements each, A = -(1..N) (S4D-real), Δ = softplus(N(0,1)
- 4), B, C ~ N(0, 1). Softmax attention ('attention') is the quadratic baseline, gate '-'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flops
import jax
import jax.numpy as jnp

from linmix.ops.attention import attention
from linmix.ops.delta import delta_rule
from linmix.ops.gla import gla
from linmix.ops.ssm import selective_scan


@dataclasses.dataclass(frozen=True)
class Shape:
    B: int
    H: int
    K: int
    V: int
    ssm_state: int = 16


@dataclasses.dataclass(frozen=True)
class Kind:
    engine: str
    forms: tuple[str, ...]  # reference first
    chunked: str  # the chunked form (the default implementation)
    inputs: Callable  # (key, T, Shape) -> tuple of differentiable inputs
    forward: Callable  # (form, chunk_size) -> f(*inputs) -> output
    fwd_flops: Callable  # (form, T, Shape, chunk_size) -> forward FLOPs


def _normal(key, shape):
    return jax.random.normal(key, shape, jnp.float32)


def _log_decay(key, shape):
    return jax.nn.log_sigmoid(_normal(key, shape)) / 16


def _gla_kind(gate: str) -> Kind:
    def inputs(key, T, s):
        kq, kk, kv, kg = jax.random.split(key, 4)
        qkv = (_normal(kq, (s.B, T, s.H, s.K)), _normal(kk, (s.B, T, s.H, s.K)))
        qkv += (_normal(kv, (s.B, T, s.H, s.V)),)
        if gate == "none":
            return qkv
        g_shape = (s.B, T, s.H) if gate == "scalar" else (s.B, T, s.H, s.K)
        return (*qkv, _log_decay(kg, g_shape))

    def forward(form, chunk_size):
        def f(q, k, v, g=None):
            return gla(q, k, v, g, chunk_size=chunk_size, implementation=form)[0]

        return f

    def fwd_flops(form, T, s, chunk_size):
        if form == "xla_chunked":
            return flops.gla_chunked(s.B, T, s.H, s.K, s.V, chunk_size=chunk_size, gate=gate)
        return flops.gla_scan(s.B, T, s.H, s.K, s.V)

    return Kind(
        "gla",
        ("reference", "associative_scan", "xla_chunked"),
        "xla_chunked",
        inputs,
        forward,
        fwd_flops,
    )


def _delta_kind(gated: bool) -> Kind:
    def inputs(key, T, s):
        kq, kk, kv, kb, kg = jax.random.split(key, 5)
        out = (_normal(kq, (s.B, T, s.H, s.K)), _normal(kk, (s.B, T, s.H, s.K)))
        out += (_normal(kv, (s.B, T, s.H, s.V)), jax.nn.sigmoid(_normal(kb, (s.B, T, s.H))))
        return (*out, _log_decay(kg, (s.B, T, s.H))) if gated else out

    def forward(form, chunk_size):
        def f(q, k, v, beta, g=None):
            return delta_rule(
                q, k, v, beta, g, use_qk_l2norm=True, chunk_size=chunk_size, implementation=form
            )[0]

        return f

    def fwd_flops(form, T, s, chunk_size):
        if form == "xla_chunked":
            return flops.delta_chunked(s.B, T, s.H, s.K, s.V, chunk_size=chunk_size)
        return flops.delta_scan(s.B, T, s.H, s.K, s.V)

    return Kind("delta", ("reference", "xla_chunked"), "xla_chunked", inputs, forward, fwd_flops)


def _selective_kind() -> Kind:
    def inputs(key, T, s):
        kx, kd, kb, kc = jax.random.split(key, 4)
        channels = s.H * s.V
        x = _normal(kx, (s.B, T, channels))
        dt = _normal(kd, (s.B, T, channels)) - 4.0
        B_ = _normal(kb, (s.B, T, s.ssm_state))
        C_ = _normal(kc, (s.B, T, s.ssm_state))
        return x, dt, B_, C_

    def forward(form, chunk_size):
        def f(x, dt, B_, C_):
            channels, n = x.shape[-1], B_.shape[-1]
            A = -jnp.broadcast_to(jnp.arange(1, n + 1, dtype=jnp.float32), (channels, n))
            return selective_scan(x, dt, A, B_, C_, chunk_size=chunk_size, implementation=form)[0]

        return f

    def fwd_flops(form, T, s, chunk_size):
        return flops.selective_scan(s.B, T, s.H * s.V, s.ssm_state)

    forms = ("reference", "associative_scan", "xla_chunked")
    return Kind("ssm", forms, "xla_chunked", inputs, forward, fwd_flops)


KINDS = {
    "none": _gla_kind("none"),
    "scalar": _gla_kind("scalar"),
    "vector": _gla_kind("vector"),
    "delta": _delta_kind(gated=False),
    "gated_delta": _delta_kind(gated=True),
    "selective": _selective_kind(),
}
ALL_FORMS = ("reference", "associative_scan", "xla_chunked", "attention")


def attention_inputs(key, T, s: Shape):
    kq, kk, kv = jax.random.split(key, 3)
    k_shape = (s.B, T, s.H, s.K)
    return _normal(kq, k_shape), _normal(kk, k_shape), _normal(kv, (s.B, T, s.H, s.V))


def attention_forward(form, chunk_size):
    return lambda q, k, v: attention(q, k, v, causal=True, implementation="xla")
