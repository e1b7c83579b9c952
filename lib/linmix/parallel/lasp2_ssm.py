"""LASP-2 sequence parallelism for the selective scan (Mamba-1 S6, `linmix.ops.ssm`;
docs/forms.md#selective-scan-over-shards).

The S6 recurrence h_t = a_t * h_{t-1} + b_t (a_t = exp(delta_t A), elementwise per (b, d, m)) is
linear in the state, so the map from the state entering a shard to the state leaving it is
affine and diagonal: S_out = a_w * S_in + M_w, with

    a_w = exp(A * sum_t delta_t)   the shard's total decay, [B, D, M] (zero when a segment
                                   boundary inside the shard resets the state),
    M_w                            the shard's final state when it starts from zero.

The sequence is split over the mesh axis `seq` into W contiguous shards, and each shard

1. runs the local `selective_scan` from a zero state (without D or the z gate, which do not
   touch the state) for its final state M_w, and forms a_w from its step sizes;
2. all-gathers, over `seq`, the stacked pair (a_w, M_w) (plus its first and last segment ids
   when the sequence is packed);
3. forms the state entering it, S_w = a_{w-1} S_{w-1} + M_{w-1} (S_0 = the initial state), a
   W-step fp32 elementwise prefix every shard computes for all w (giving the final state too);
4. zeroes S_w for the batch rows whose shard starts a new segment (the local op feeds its
   initial state to the shard's first segment only), then reruns the local `selective_scan`
   from S_w, with D and z, for its outputs.

Step 4 is exact: the rerun sees precisely the state the unsharded scan holds at the shard edge,
so the skip connection, the gate and segment resets all behave as in the unsharded op. (Unlike
engine L there is no cheap separable output correction: adding C_t exp(sum delta A) S_w would need
per-token [D, M] decays, so the shard reruns its scan, as `delta_rule_sharded` does.)

Traffic per layer and device is (W - 1) / W of W stacked pairs of [B/data, D, M] fp32 states,
independent of T. Gradients come from autodiff (the all-gather transposes to a reduce-scatter of
the same size); A, D and dt_bias are replicated parameters whose per-shard gradients are summed.
"""

from __future__ import annotations

from functools import partial

import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from linmix.ops.ssm import common, selective_scan
from linmix.ops.ssm.api import validate
from linmix.parallel.lasp2 import sequence_specs, shard_map_inputs, shard_prefix, shard_segments

__all__ = ["selective_scan_sharded"]

_F32 = jnp.float32


def selective_scan_sharded(mesh, seq_axis: str = "seq"):
    """`linmix.ops.ssm.selective_scan` over a sequence sharded on `seq_axis` of `mesh`.

    Same arguments and results as `selective_scan`; inputs may have any sharding (the [B, T, ...]
    ones are resharded to batch over the other mesh axes of size > 1 and time over `seq_axis`;
    A, D and dt_bias are replicated). T must be divisible by the size of `seq_axis`.
    """
    spec_T, spec_B = sequence_specs(mesh, seq_axis)
    W = mesh.shape[seq_axis]

    def run(x, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus=True,
            initial_state=None, output_final_state=False, segment_ids=None, chunk_size=64,
            implementation=None):  # fmt: skip
        validate(x, dt, A, B, C, D, z, dt_bias, initial_state, segment_ids, chunk_size)
        Bt, T, Dc = x.shape
        if T % W:
            raise ValueError(f"T = {T} must be divisible by the size {W} of mesh axis {seq_axis!r}")
        S0 = jnp.zeros((Bt, Dc, A.shape[1]), _F32) if initial_state is None else initial_state
        local = partial(
            selective_scan, dt_softplus=dt_softplus, chunk_size=chunk_size,
            implementation=implementation,
        )  # fmt: skip

        def shard(x, dt, A, B, C, D, z, dt_bias, S0, seg):
            # 1. From zero: the local final state M (D and z only touch the outputs).
            _, M_BDM = local(x, dt, A, B, C, dt_bias=dt_bias, segment_ids=seg,
                             output_final_state=True)  # fmt: skip
            sum_delta_BD = jnp.sum(common.delta(dt, dt_bias, dt_softplus), axis=1)
            a_BDM = common.decay(sum_delta_BD, A)
            if seg is not None:
                reads_BT, keeps_B = shard_segments(seg, seq_axis)
                a_BDM = a_BDM * keeps_B[:, None, None]
            # 2-3. One all-gather of the stacked (a, M), then the elementwise prefix.
            aM_W2BDM = lax.all_gather(jnp.stack([a_BDM, M_BDM]), seq_axis)
            S_in, S_final = shard_prefix(aM_W2BDM[:, 0], aM_W2BDM[:, 1], S0.astype(_F32), seq_axis)
            # 4. A shard that starts a new segment must not see the carried state.
            if seg is not None:
                S_in = S_in * reads_BT[:, 0, None, None]
            y, _ = local(x, dt, A, B, C, D, z, dt_bias=dt_bias, initial_state=S_in,
                         segment_ids=seg)  # fmt: skip
            return y, S_final

        args = dict(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, S0=S0, seg=segment_ids)
        specs = dict(x=spec_T, dt=spec_T, A=P(), B=spec_T, C=spec_T, D=P(), z=spec_T,
                     dt_bias=P(), S0=spec_B, seg=spec_T)  # fmt: skip
        y, S = shard_map_inputs(shard, mesh, args, specs, (spec_T, spec_B))
        return y, (S if output_final_state else None)

    return run
