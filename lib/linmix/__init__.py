"""linmix: linear-time sequence mixers in JAX/Flax.

`import linmix` gives the Python API of `linmix.api` (get_config, build, fit, load, evaluate,
Trainer, ModelConfig, parameter_count); the packages: `linmix.ops` (engines and kernels),
`linmix.parallel` (LASP-2), `linmix.models` (mixers, LM), `linmix.data`, `linmix.train`,
`linmix.generate`.
"""

import importlib

__version__ = "0.1.0"


def __getattr__(name: str):
    """`linmix.api`'s names, loaded on first use: `import linmix.ops` stays light."""
    api = importlib.import_module("linmix.api")
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'linmix' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *importlib.import_module("linmix.api").__all__])
