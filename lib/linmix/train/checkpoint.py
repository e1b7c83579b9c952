"""Orbax checkpoints holding the train state AND the grain iterator state, saved together.

The train state is an arbitrary pytree (NNX modules in tree mode, optax states); Orbax restores
only string-keyed trees reliably, so it is stored as a nested dict keyed by its key-path names and
mapped back onto the live structure on restore.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    raise TypeError(f"unsupported pytree key {key!r}")


def to_nested(tree: Any) -> dict:
    """Pytree -> nested dict of leaves keyed by key-path names (what Orbax stores)."""
    nested: dict = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        node = nested
        *parents, last = [_key_name(k) for k in path]
        for name in parents:
            node = node.setdefault(name, {})
        node[last] = leaf
    return nested


def from_nested(template: Any, nested: dict) -> Any:
    """Put the leaves of `nested` back into the structure of `template`."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, _ in paths:
        node = nested
        for key in path:
            node = node[_key_name(key)]
        leaves.append(node)
    return jax.tree_util.tree_unflatten(treedef, leaves)


class Checkpointer:
    """Saves (train state, data iterator) every `every` steps; restores the newest complete one."""

    def __init__(self, directory: str | Path, *, every: int, keep: int):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, save_interval_steps=every, create=True
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iter: Any, *, force: bool = False) -> bool:
        if not (force or self.manager.should_save(step)):
            return False
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(to_nested(state)),
                data=grain.checkpoint.CheckpointSave(data_iter),
            ),
            force=force,
        )

    def restore(self, step: int, abstract_state: Any, data_iter: Any) -> Any:
        """Restore `step` into the shapes of `abstract_state`; `data_iter` is reset in place."""
        target = to_nested(jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state))
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target),
                data=grain.checkpoint.CheckpointRestore(data_iter),
            ),
        )
        return from_nested(abstract_state, restored.state)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
