"""Token-local operations across `seq` shards: a halo of preceding tokens for causal windows
(short convolutions), and next-token targets whose last token comes from the following shard
(docs/forms.md#token-local-operations-across-shards).

Each shard sends `halo` boundary tokens to its neighbour with one collective-permute; the first
shard receives nothing (a zero input from before the sequence, with a segment id unlike any
real one), the last shard's final target is IGNORE_INDEX.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from linmix.parallel.context import SequenceParallel
from linmix.parallel.lasp2 import sequence_specs, shard_map_inputs


def _from_neighbour(x, axis: str, size: int, step: int):
    """x of shard w - step (step=1: previous shard) on every shard; zeros where there is none."""
    pairs = [(i, i + step) for i in range(size) if 0 <= i + step < size]
    return lax.ppermute(x, axis, pairs)


def with_halo(
    fn: Callable, x_BTC: jax.Array, segment_ids_BT: jax.Array | None, halo: int,
    sp: SequenceParallel, *params: jax.Array,
) -> jax.Array:  # fmt: skip
    """`fn(x, segment_ids, *params)` for a causal op whose output at t reads inputs
    t - halo .. t only, over a sequence sharded on `sp.axis`: each shard runs `fn` on its tokens
    preceded by the previous shard's last `halo` tokens and keeps its own outputs. `params`
    are replicated."""
    spec_T, _ = sequence_specs(sp.mesh, sp.axis)
    seg = jnp.zeros(x_BTC.shape[:2], jnp.int32) if segment_ids_BT is None else segment_ids_BT
    Tl = x_BTC.shape[1] // sp.size
    if not 0 <= halo <= Tl:
        raise ValueError(f"with_halo: a halo of {halo} tokens exceeds the shard length {Tl}")

    def shard(x, seg, **named):
        params = tuple(named.values())
        if halo == 0:
            return fn(x, seg, *params)
        w = lax.axis_index(sp.axis)
        x_prev = _from_neighbour(x[:, -halo:], sp.axis, sp.size, 1)
        seg_prev = _from_neighbour(seg[:, -halo:], sp.axis, sp.size, 1)
        seg_prev = jnp.where(w == 0, seg[:, :1] - 1, seg_prev)  # nothing precedes shard 0
        y = fn(jnp.concatenate([x_prev, x], 1), jnp.concatenate([seg_prev, seg], 1), *params)
        return y[:, halo:]

    named = {f"p{i}": p for i, p in enumerate(params)}
    args = dict(x=x_BTC, seg=seg, **named)
    specs = dict(x=spec_T, seg=spec_T, **{n: P() for n in named})
    return shard_map_inputs(shard, sp.mesh, args, specs, spec_T)


def next_token_targets(
    tokens_BT: jax.Array, segment_ids_BT: jax.Array | None, ignore: int,
    sp: SequenceParallel | None = None,
) -> jax.Array:  # fmt: skip
    """targets[t] = tokens[t + 1] within a segment, `ignore` at a segment's (and the sequence's)
    last token. With `sp`, the shard-crossing target comes from the next shard."""
    seg = jnp.zeros_like(tokens_BT) if segment_ids_BT is None else segment_ids_BT

    def local(tok, seg, tok_next, seg_next):
        nxt = jnp.concatenate([tok[:, 1:], tok_next], 1)
        same = jnp.concatenate([seg[:, 1:], seg_next], 1) == seg
        return jnp.where(same, nxt, ignore)

    if sp is None:
        return local(tokens_BT, seg, tokens_BT[:, :1], seg[:, :1] - 1)
    spec_T, _ = sequence_specs(sp.mesh, sp.axis)

    def shard(tok, seg):
        last = lax.axis_index(sp.axis) == sp.size - 1
        tok_next = _from_neighbour(tok[:, :1], sp.axis, sp.size, -1)
        seg_next = _from_neighbour(seg[:, :1], sp.axis, sp.size, -1)
        return local(tok, seg, tok_next, jnp.where(last, seg[:, -1:] - 1, seg_next))

    return shard_map_inputs(
        shard, sp.mesh, dict(tok=tokens_BT, seg=seg), dict(tok=spec_T, seg=spec_T), spec_T
    )
