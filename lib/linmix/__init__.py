"""linmix: linear-time sequence mixers in JAX/Flax.

`import linmix` gives the Python API of `linmix.api` (get_config, build, fit, load, evaluate,
Trainer, ModelConfig, parameter_count); the packages: `linmix.ops` (engines and kernels),
`linmix.parallel` (LASP-2), `linmix.models` (mixers, LM), `linmix.data`, `linmix.train`,
`linmix.generate`.
"""

import importlib

__version__ = "0.1.0"

API = (
    "LM",
    "ModelConfig",
    "Restored",
    "Trainer",
    "build",
    "check_batch",
    "evaluate",
    "fit",
    "get_config",
    "load",
    "parameter_count",
)


def __getattr__(name: str):
    if name in API:  # loaded on first use: `import linmix.ops` stays light
        return getattr(importlib.import_module("linmix.api"), name)
    raise AttributeError(f"module 'linmix' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *API])
