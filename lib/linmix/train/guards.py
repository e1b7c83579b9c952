"""What stops a run early, losing nothing: preemption signals and non-finite steps.

- `Preemption`: while active, SIGTERM (and SIGINT) only set a flag; the loop checks it after each
  step, saves a checkpoint at that step and returns normally, so the process exits 0 inside the
  grace period and rerunning the same command resumes there. In multi-process runs the decision
  is taken at a step all processes agree on (Orbax's preemption sync point).
- `NonFiniteError`: raised by the loop when a step's loss or gradients are not finite. The step's
  state is never saved, so the newest checkpoint is the last good one; the error names the step
  and the tensors, and is written to `<workdir>/nonfinite.json`.
"""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path

import jax
import numpy as np

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preemption:
    """Context manager turning stop signals into a flag (restores the handlers on exit)."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self) -> Preemption:
        for sig in STOP_SIGNALS:
            # Off the main thread signals can't be caught: the run then stops the default way.
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal = signum

    def reached(self, step: int, manager) -> bool:
        """Stop after `step`? (Every process answers the same in a multi-process run.)"""
        if jax.process_count() > 1:
            return bool(manager.reached_preemption(step))
        return self.signal is not None


class NonFiniteError(RuntimeError):
    """A step produced a non-finite loss or gradient; nothing from it was saved."""


def check_finite(step: int, metrics: dict, grad_names: list[str], workdir: Path) -> None:
    """Raise NonFiniteError (after writing a report) if the step's metrics flag non-finite."""
    if bool(jax.device_get(metrics["finite"])):
        return
    bad = np.asarray(jax.device_get(metrics["grads_finite"])) == 0
    report = {
        "step": step,
        "loss": float(jax.device_get(metrics["loss"])),
        "nonfinite_grads": [name for name, b in zip(grad_names, bad, strict=True) if b],
    }
    if jax.process_index() == 0:
        (workdir / "nonfinite.json").write_text(json.dumps(report, indent=1) + "\n")
    grads = report["nonfinite_grads"]
    shown = ", ".join(grads[:5]) + (f" and {len(grads) - 5} more" if len(grads) > 5 else "")
    raise NonFiniteError(
        f"non-finite training step {step}: loss={report['loss']}"
        + (f"; non-finite gradients in {shown}" if grads else "")
        + "; nothing from this step was saved: the newest checkpoint is the last good one. "
        "Rerun the same command (e.g. with a lower --config.train.lr) to resume from it."
    )
