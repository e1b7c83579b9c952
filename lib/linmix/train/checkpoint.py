"""Orbax checkpoints holding the train state AND the grain iterator state, saved together.

The train state is an arbitrary pytree (NNX modules in tree mode, optax states); Orbax restores
only string-keyed trees reliably, so it is stored as a nested dict keyed by its key-path names and
mapped back onto the live structure on restore.
"""

from __future__ import annotations

import logging
import shutil
import time
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
    """Saves (train state, data iterator) at multiples of `every` steps (and when forced);
    restores the newest complete one."""

    def __init__(self, directory: str | Path, *, every: int, keep: int):
        self.every = every
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, save_interval_steps=1, create=True
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iter: Any, *, force: bool = False) -> bool:
        if not (force or self.due(step)):
            return False
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(to_nested(state)),
                data=grain.checkpoint.CheckpointSave(data_iter),
            ),
            force=True,  # the decision is ours (due or forced)
        )

    def due(self, step: int) -> bool:
        """Is `step` a regular save step?"""
        return step % self.every == 0

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

    def restore_latest(self, abstract_state: Any, make_iter) -> tuple[int | None, Any, Any]:
        """(step, state, data iterator) from the newest checkpoint that restores, or
        (None, None, make_iter()) when there is none. A checkpoint that fails to restore (files
        lost or cut short by a crash during save) is moved to `<dir>_corrupt/` with a warning
        and the next older one is tried; if every one fails, that is an error."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        for step in steps:
            data_iter = make_iter()
            try:
                return step, self.restore(step, abstract_state, data_iter), data_iter
            except Exception as e:  # noqa: BLE001 - any failure means this one is unusable
                reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
                self._set_aside(step)
                log.warning("checkpoint %d could not be restored (%s)", step, reason)
                print(f"linmix: warning: checkpoint {step} is unreadable ({reason}); set aside "
                      "in checkpoints_corrupt/, trying an older one", flush=True)  # fmt: skip
        if steps:
            raise RuntimeError(
                f"no checkpoint in {self.directory} could be restored (tried {steps}); the "
                f"unreadable ones were moved to {self.directory}_corrupt"
            )
        return None, None, make_iter()

    def _set_aside(self, step: int) -> None:
        """Move an unreadable step out of the manager's directory (a resumed run saves that
        step again)."""
        if jax.process_index() == 0:
            src = self.directory / str(step)
            if src.exists():
                aside = Path(f"{self.directory}_corrupt")
                aside.mkdir(parents=True, exist_ok=True)
                shutil.move(str(src), str(aside / f"{step}.{time.strftime('%Y%m%d-%H%M%S')}"))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"linmix_set_aside_{step}")
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
