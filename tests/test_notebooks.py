"""The notebooks in experiments/notebooks are kept clean (no outputs) and run as they stand: their
code cells, joined into one script, execute in a fresh process from an empty directory."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "experiments" / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
TIMEOUT_S = 900  # each notebook takes a minute or two alone on 2 CPU cores


def load(path: Path) -> dict:
    notebook = json.loads(path.read_text())
    assert notebook.get("nbformat") == 4, f"{path.name}: not an nbformat 4 notebook"
    return notebook


def code_cells(notebook: dict) -> list[str]:
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]


def script(notebook: dict) -> str:
    """The code cells in order, without IPython magics (`%...`) and shell escapes (`!...`)."""
    lines = []
    for source in code_cells(notebook):
        lines += [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        lines.append("")
    return "\n".join(lines)


def test_there_are_notebooks() -> None:
    assert {p.name for p in PATHS} >= {"quickstart.ipynb", "engines.ipynb"}


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_is_clean(path: Path) -> None:
    """Committed without outputs or execution counts."""
    for i, c in enumerate(load(path)["cells"]):
        assert c["cell_type"] in ("markdown", "code", "raw"), (path.name, i)
        if c["cell_type"] == "code":
            assert c.get("outputs") == [], f"{path.name}: cell {i} has outputs"
            assert c.get("execution_count") is None, f"{path.name}: cell {i} has a count"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_imports_are_installed(path: Path) -> None:
    """Everything a notebook imports is installed with `pip install -e ".[dev]"`."""
    modules = set()
    for node in ast.walk(ast.parse(script(load(path)))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module)
    missing = sorted(m for m in modules if importlib.util.find_spec(m.split(".")[0]) is None)
    assert not missing, f"{path.name} imports packages that are not installed: {missing}"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    source = tmp_path / f"{path.stem}.py"
    source.write_text(script(load(path)))
    # A fresh kernel: one CPU device unless the notebook asks for more, and plots to no window.
    flags = re.sub(
        r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", "")
    )
    env = {**os.environ, "XLA_FLAGS": flags.strip(), "MPLBACKEND": "Agg"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(source)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=TIMEOUT_S,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    assert done.returncode == 0, (
        f"{path.name} failed after {seconds:.0f}s:\n{done.stderr[-6000:]}\n"
        f"--- stdout (tail)\n{done.stdout[-2000:]}"
    )
    print(f"{path.name}: {seconds:.0f}s")
