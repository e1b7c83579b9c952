"""Where the train state and the batches live on the mesh ('data', 'fsdp', 'seq', 'tensor').

- Batches: sequences over ('data', 'fsdp'), time over 'seq' (LASP-2 inside the model).
- Parameters and optimizer state (FSDP): each array with at least `MIN_SHARDED` elements is split
  over 'fsdp' along its largest dimension that 'fsdp' divides; the rest is replicated. The jitted
  step all-gathers parameters where they are used and reduce-scatters their gradients.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from linmix.parallel import sequence_parallel

BATCH_AXES = ("data", "fsdp")
MIN_SHARDED = 4096  # smaller arrays (norm scales, biases, scalars) are replicated


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES, "seq"))


def param_spec(shape: tuple[int, ...], fsdp: int) -> P:
    """'fsdp' on the largest dimension it divides, or replicated."""
    if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < MIN_SHARDED:
        return P()
    for dim in sorted(range(len(shape)), key=lambda i: -shape[i]):
        if shape[dim] % fsdp == 0:
            return P(*(["fsdp" if i == dim else None for i in range(len(shape))]))
    return P()


def state_shardings(abstract_state: Any, mesh: jax.sharding.Mesh) -> Any:
    """A NamedSharding for every leaf of an abstract train state (from `jax.eval_shape`)."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(lambda a: NamedSharding(mesh, param_spec(a.shape, fsdp)), abstract_state)


def with_shardings(abstract_state: Any, shardings: Any) -> Any:
    """Abstract leaves carrying their target sharding (what a sharded restore needs)."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
    )


def put_batch(batch: dict, sharding: NamedSharding) -> dict:
    """This process's rows of a batch -> global arrays laid out by `sharding`."""
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
    }


def in_mesh(mesh: jax.sharding.Mesh, fn):
    """`fn` traced with the sequence sharded over the mesh's 'seq' axis (when it is > 1)."""

    @functools.wraps(fn)
    def wrapped(*args):
        with sequence_parallel(mesh):
            return fn(*args)

    return wrapped
