"""LASP-2 sequence parallelism: one all-gather of fixed-size states per layer
(docs/forms.md#sequence-parallelism-lasp-2).

The sequence is split over the mesh axis `seq` into W contiguous shards. For engine L each shard

1. runs the chunked op from a zero state: local outputs and its local final state M_w;
2. all-gathers, over `seq`, (a_w, M_w) (a_w the shard's total decay, zero where a segment
   boundary inside the shard resets the state) and its first and last segment ids;
3. forms the state entering it, S_w = a_{w-1} S_{w-1} + M_{w-1} (S_0 = the initial state), a
   W-step fp32 prefix every shard computes for all w;
4. adds the correction scale * (q_t * exp(b_t)) S_w for the tokens still in the segment carried
   in (b_t the inclusive log-decay from the shard start).

For engine Δ the shard map is affine with a K x K transition, S_out = T_w S_in + M_w: one local
run with values [v | 0] from the state [0 | I] gives both (M_w, T_w); after the prefix the
shard reruns its local pass from S_w (the correction is not separable for the delta rule).

Traffic per layer and device is (W - 1) fixed-size states, independent of T. Gradients come from
autodiff: the all-gather transposes to a reduce-scatter of the same size. Every function here
has the signature of the op it wraps plus the mesh, and runs the op's own (chunked) form on each
shard.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from linmix.ops.delta import delta_rule
from linmix.ops.gla import gla
from linmix.ops.gla.features import divide_by_denominator, with_denominator

_F32 = jnp.float32


def sequence_specs(mesh, seq_axis: str):
    """Batch over every other mesh axis of size > 1, time over `seq_axis`, the rest replicated."""
    batch = tuple(a for a in mesh.axis_names if a != seq_axis and mesh.shape[a] > 1) or None
    return P(batch, seq_axis), P(batch)


def shard_segments(seg_BT, seq_axis: str):
    """Per shard: does it continue the segment open at the end of the previous shard (True for
    shard 0: the initial state feeds the first segment), which tokens still read the carried
    state, and does the carried state survive the whole shard. All [B, ...] bool."""
    w = lax.axis_index(seq_axis)
    ends = lax.all_gather(jnp.stack([seg_BT[:, 0], seg_BT[:, -1]], axis=-1), seq_axis)  # [W,B,2]
    prev_last = jnp.where(w > 0, ends[jnp.maximum(w - 1, 0), :, 1], seg_BT[:, 0])
    continues_B = seg_BT[:, 0] == prev_last
    reads_BT = continues_B[:, None] & (seg_BT == seg_BT[:, :1])
    keeps_B = reads_BT[:, -1]
    return reads_BT, keeps_B


def shard_prefix(a_W, M_W, S0, seq_axis: str, *, transition: bool = False):
    """States entering each shard, S_w = a_{w-1} S_{w-1} + M_{w-1}, and the final state. a_W
    multiplies elementwise (broadcast), or left-multiplies when it is a K x K `transition`."""
    S, entering = S0, []
    for w in range(M_W.shape[0]):
        entering.append(S)
        if transition:
            S = jnp.einsum("bhkj,bhjv->bhkv", a_W[w], S, precision="highest") + M_W[w]
        else:
            S = a_W[w] * S + M_W[w]
    return jnp.stack(entering)[lax.axis_index(seq_axis)], S


def place(x: jax.Array, mesh, spec: P) -> jax.Array:
    """`x` laid out as `spec` on `mesh`: `jax.reshard` on an Explicit mesh (it does no implicit
    resharding), a sharding constraint on an Auto one. A NamedSharding, not the bare spec, so
    that no `jax.set_mesh(mesh)` is needed around the call."""
    sharding = jax.sharding.NamedSharding(mesh, spec)
    if all(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types):
        return jax.reshard(x, sharding)
    return lax.with_sharding_constraint(x, sharding)


def shard_map_inputs(fn, mesh, args: dict, specs: dict, out_specs):
    """shard_map over the inputs that are present (None entries are passed through as None),
    each placed as its spec first."""
    names = [n for n, x in args.items() if x is not None]

    def body(*xs):
        return fn(**dict(zip(names, xs, strict=True)), **{n: None for n in args if n not in names})

    return jax.shard_map(
        body,
        mesh=mesh,
        in_specs=tuple(specs[n] for n in names),
        out_specs=out_specs,
        check_vma=False,
    )(*(place(args[n], mesh, specs[n]) for n in names))


def gla_sharded(mesh, seq_axis: str = "seq"):
    """`linmix.ops.gla.gla` over a sequence sharded on `seq_axis` of `mesh` (causal form).

    Same arguments and results as `gla` (causal=True); inputs may have any sharding (they are
    resharded to batch over the other mesh axes, time over `seq_axis`).
    """
    spec_T, spec_B = sequence_specs(mesh, seq_axis)

    def run(q, k, v, g=None, *, scale=None, initial_state=None, output_final_state=False,
            segment_ids=None, normalize=False, chunk_size=64, implementation=None):  # fmt: skip
        B, T, H, K = q.shape
        if normalize:  # the denominator is one more value column, divided out at the end
            v = with_denominator(v)
        scale = K**-0.5 if scale is None else scale
        S0 = jnp.zeros((B, H, K, v.shape[-1]), _F32) if initial_state is None else initial_state
        local = partial(gla, scale=scale, chunk_size=chunk_size, implementation=implementation)

        def shard(q, k, v, g, S0, seg):
            o, M = local(q, k, v, g, segment_ids=seg, output_final_state=True)
            seg = jnp.zeros(q.shape[:2], jnp.int32) if seg is None else seg
            reads_BT, keeps_B = shard_segments(seg, seq_axis)
            b_BTHX = _log_decay(g, q.shape)
            a_BHX = jnp.exp(b_BTHX[:, -1]) * keeps_B[:, None, None]
            a_W = lax.all_gather(a_BHX[..., None], seq_axis)  # [W, B, H, X, 1]
            M_W = lax.all_gather(M, seq_axis)
            S_in, S_final = shard_prefix(a_W, M_W, S0.astype(_F32), seq_axis)
            q_decay = q.astype(_F32) * jnp.exp(b_BTHX) * reads_BT[:, :, None, None]
            o = o.astype(_F32) + scale * jnp.einsum("bthk,bhkv->bthv", q_decay, S_in)
            return o.astype(q.dtype), S_final

        args = dict(q=q, k=k, v=v, g=g, S0=S0, seg=segment_ids)
        specs = dict(q=spec_T, k=spec_T, v=spec_T, g=spec_T, S0=spec_B, seg=spec_T)
        o, S = shard_map_inputs(shard, mesh, args, specs, (spec_T, spec_B))
        if normalize:
            o = divide_by_denominator(o.astype(_F32)).astype(q.dtype)
        return o, (S if output_final_state else None)

    return run


def _log_decay(g, q_shape):
    """Inclusive cumulative log-decay from the shard start, [B, T, H, X] fp32 (X = 1 or K)."""
    if g is None:
        return jnp.zeros((*q_shape[:3], 1), _F32)
    g = g.astype(_F32)
    return jnp.cumsum(g[..., None] if g.ndim == 3 else g, axis=1)


def delta_rule_sharded(mesh, seq_axis: str = "seq"):
    """`linmix.ops.delta.delta_rule` over a sequence sharded on `seq_axis` of `mesh`.

    Same arguments and results as `delta_rule`. Each shard runs its local op twice: once from
    [0 | I] with values [v | 0] (its state and transition), once from the gathered prefix.
    """
    spec_T, spec_B = sequence_specs(mesh, seq_axis)

    def run(q, k, v, beta, g=None, *, scale=None, initial_state=None, output_final_state=False,
            segment_ids=None, use_qk_l2norm=False, chunk_size=64, implementation=None):  # fmt: skip
        B, T, H, K = q.shape
        V = v.shape[-1]
        scale = K**-0.5 if scale is None else scale
        S0 = jnp.zeros((B, H, K, V), _F32) if initial_state is None else initial_state
        local = partial(
            delta_rule, scale=scale, chunk_size=chunk_size, use_qk_l2norm=use_qk_l2norm,
            implementation=implementation, output_final_state=True,
        )  # fmt: skip

        def shard(q, k, v, beta, g, S0, seg):
            Bl, Tl = q.shape[:2]
            # From [0 | I] with values [v | 0]: final state [M | T'], T' the transition applied
            # to a state carried into the segment open at the shard end.
            v_ext = jnp.concatenate([v, jnp.zeros((Bl, Tl, H, K), v.dtype)], axis=-1)
            eye = jnp.broadcast_to(jnp.eye(K, dtype=_F32), (Bl, H, K, K))
            S_ext0 = jnp.concatenate([jnp.zeros((Bl, H, K, V), _F32), eye], axis=-1)
            _, S_ext = local(q, k, v_ext, beta, g, initial_state=S_ext0, segment_ids=seg)
            M, Tr = S_ext[..., :V], S_ext[..., V:]
            seg_info = shard_segments(
                jnp.zeros((Bl, Tl), jnp.int32) if seg is None else seg, seq_axis
            )
            reads_BT, keeps_B = seg_info
            Tr = Tr * keeps_B[:, None, None, None]
            S_in, S_final = shard_prefix(
                lax.all_gather(Tr, seq_axis), lax.all_gather(M, seq_axis), S0.astype(_F32),
                seq_axis, transition=True,
            )  # fmt: skip
            # A shard that starts a new segment must not see the carried state: the local op
            # feeds its initial state to the shard's first segment only, so zero it then.
            S_in = S_in * reads_BT[:, 0, None, None, None]
            o, _ = local(q, k, v, beta, g, initial_state=S_in, segment_ids=seg)
            return o, S_final

        args = dict(q=q, k=k, v=v, beta=beta, g=g, S0=S0, seg=segment_ids)
        specs = dict(q=spec_T, k=spec_T, v=spec_T, beta=spec_T, g=spec_T, S0=spec_B, seg=spec_T)
        o, S = shard_map_inputs(shard, mesh, args, specs, (spec_T, spec_B))
        return o, (S if output_final_state else None)

    return run
