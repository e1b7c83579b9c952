"""Whether, and over which mesh axis, the sequence is sharded while a model is traced.

    with sequence_parallel(mesh):          # inside the jitted step
        logits = model(tokens)             # engines run LASP-2, softmax layers LASP-2H,
                                           # short convs exchange a halo, over mesh axis 'seq'

Models consult `active()` at trace time; everything outside the sequence ops (projections, norms,
the loss) is ordinary sharded jit code. A mesh whose `seq` axis has size 1 activates nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses

import jax


@dataclasses.dataclass(frozen=True)
class SequenceParallel:
    mesh: jax.sharding.Mesh
    axis: str = "seq"

    @property
    def size(self) -> int:
        return self.mesh.shape[self.axis]


_ACTIVE: contextvars.ContextVar[SequenceParallel | None] = contextvars.ContextVar(
    "linmix_sequence_parallel", default=None
)


@contextlib.contextmanager
def sequence_parallel(mesh: jax.sharding.Mesh | None, axis: str = "seq"):
    """Shard the sequence over `axis` of `mesh` for the models traced inside (None: don't)."""
    on = mesh is not None and dict(mesh.shape).get(axis, 1) > 1
    token = _ACTIVE.set(SequenceParallel(mesh, axis) if on else None)
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)


def active() -> SequenceParallel | None:
    """The sequence-parallel setting of the enclosing `sequence_parallel`, or None."""
    return _ACTIVE.get()


def shard_tokens(x_BT: jax.Array) -> jax.Array:
    """Constrain an activation [B, T, ...] to batch over the other mesh axes, time over the
    sequence axis, when the sequence is sharded; otherwise unchanged."""
    sp = active()
    if sp is None:
        return x_BT
    from linmix.parallel.lasp2 import place, sequence_specs  # one definition of the batch axes

    return place(x_BT, sp.mesh, sequence_specs(sp.mesh, sp.axis)[0])
