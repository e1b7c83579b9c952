"""CLI: `python -m linmix.main --config=ml_collections_configs/mqar.py[:variant] --workdir=DIR`.

Config overrides: `--config.train.steps=200`, `--config.model.mixer_options.use_short_conv=True`.
The config is locked: an unknown key, a bad value or an unknown mixer exits with a one-line error
before anything is compiled. Running the same command again resumes from the newest checkpoint.
Exit codes: 0 done (or stopped by SIGTERM / SIGINT after saving a checkpoint), 2 bad config,
3 a non-finite step (report in <workdir>/nonfinite.json; the last good checkpoint is kept).
"""

from __future__ import annotations

import ast
import logging
import sys

from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with a :variant.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")


def _one_line(error: BaseException | str) -> str:
    """The root cause of a (possibly wrapped) error as a single line."""
    if isinstance(error, BaseException):
        is_key = isinstance(error, KeyError) and error.args
        error = str(error.args[0]) if is_key else str(error)
    if error[:1] in "'\"" and error[-1:] == error[:1]:
        # A locked ConfigDict's KeyError arrives as the repr of "'key'\nDid you mean ...".
        key, _, hint = ast.literal_eval(error).partition("\n")
        error = f"unknown config key {key}. {hint}".strip()
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
        lines = lines[-1:]  # config_flags embeds the config file's traceback: keep its last line
    return " ".join(" ".join(lines).split())


def _fail(error: BaseException | str) -> None:
    print(f"linmix: error: {_one_line(error)}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv if argv is None else argv
    try:
        flags.FLAGS(argv)
        config = _CONFIG.value
    except Exception as e:  # flag parsing wraps config-file and override errors
        _fail(e)
    if config is None:
        _fail("--config is required, e.g. --config=ml_collections_configs/mqar.py")
    if not _WORKDIR.value:
        _fail("--workdir is required")

    if config.get("distributed") is not None and config.distributed.enabled:
        from linmix.parallel import initialize_distributed  # before any other JAX call

        dc = config.distributed
        initialize_distributed(dc.coordinator_address, dc.num_processes, dc.process_id)

    from linmix.train.validate import ConfigError, validate

    try:
        validate(config)  # before any compilation
    except ConfigError as e:
        _fail(e)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)

    from linmix.train.guards import NonFiniteError
    from linmix.train.loop import run

    try:
        return run(config, _WORKDIR.value)
    except NonFiniteError as e:
        print(f"linmix: error: {e}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
