"""Cache-aware calls of the recurrent engines, shared by the mixers.

Each `run_*` takes the engine's inputs and the cached state (None: a whole sequence from the zero
state, no state returned). With a state, T = 1 runs the engine's decode step and T > 1 its chunked
form from that state (prefill); both return the new state. Inside
`linmix.parallel.sequence_parallel`, whole sequences run the engine's LASP-2 form over the shards;
inside `linmix.ops.dispatch.use_implementations`, chunked calls use the implementation named there.
"""

from __future__ import annotations

import jax

from linmix.ops.delta import delta_rule, delta_rule_step
from linmix.ops.dispatch import implementation
from linmix.ops.gla import gla, gla_step
from linmix.ops.ssm import selective_scan, selective_scan_step
from linmix.parallel.context import active
from linmix.parallel.lasp2 import delta_rule_sharded, gla_sharded
from linmix.parallel.lasp2_ssm import selective_scan_sharded


def _engine(plain, sharded):
    """The op itself, or its LASP-2 form when the sequence is sharded."""
    sp = active()
    return plain if sp is None else sharded(sp.mesh, sp.axis)


def _first(x: jax.Array | None) -> jax.Array | None:
    return None if x is None else x[:, 0]


def run_gla(q, k, v, g, *, state=None, segment_ids=None, chunk_size=64, **kw):
    """`gla` (causal) or `gla_step`: (o [B, T, H, V], new state or None)."""
    if q.shape[1] == 1 and state is not None:
        o_t, state = gla_step(_first(q), _first(k), _first(v), _first(g), state, **kw)
        return o_t[:, None], state
    kw = {**implementation("gla"), **kw}
    if state is None:
        o, _ = _engine(gla, gla_sharded)(
            q, k, v, g, segment_ids=segment_ids, chunk_size=chunk_size, **kw
        )
        return o, None
    return gla(
        q, k, v, g, initial_state=state, output_final_state=True, chunk_size=chunk_size, **kw
    )


def run_delta(q, k, v, beta, g, *, state=None, segment_ids=None, chunk_size=64, **kw):
    """`delta_rule` or `delta_rule_step`: (o [B, T, H, V], new state or None)."""
    if q.shape[1] == 1 and state is not None:
        args = (_first(q), _first(k), _first(v), _first(beta), _first(g), state)
        o_t, state = delta_rule_step(*args, **kw)
        return o_t[:, None], state
    kw = {**implementation("delta"), **kw}
    if state is None:
        o, _ = _engine(delta_rule, delta_rule_sharded)(
            q, k, v, beta, g, segment_ids=segment_ids, chunk_size=chunk_size, **kw
        )
        return o, None
    return delta_rule(
        q, k, v, beta, g, initial_state=state, output_final_state=True, chunk_size=chunk_size, **kw
    )


def run_ssm(x, dt, A, B, C, D, z, *, state=None, segment_ids=None, chunk_size=64, **kw):
    """`selective_scan` or `selective_scan_step`: (y [B, T, D], new state or None)."""
    if x.shape[1] == 1 and state is not None:
        y_t, state = selective_scan_step(
            x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D, _first(z), state, **kw
        )
        return y_t[:, None], state
    kw = {**implementation("ssm"), **kw}
    if state is None:
        y, _ = _engine(selective_scan, selective_scan_sharded)(
            x, dt, A, B, C, D, z, segment_ids=segment_ids, chunk_size=chunk_size, **kw
        )
        return y, None
    return selective_scan(
        x, dt, A, B, C, D, z, initial_state=state, output_final_state=True,
        chunk_size=chunk_size, **kw,
    )  # fmt: skip
