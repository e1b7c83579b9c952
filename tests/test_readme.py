"""The README's Python snippet runs as it stands (in a fresh process, from an empty directory)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_snippet(section: str) -> str:
    """The first ```python block after the heading `section`."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_the_python_api_snippet_runs(tmp_path):
    script = tmp_path / "snippet.py"
    script.write_text(python_snippet("From Python and notebooks"))
    env = {**os.environ, "XLA_FLAGS": ""}  # one CPU device, as in a notebook
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "runs" / "notebook_gla" / "checkpoints").is_dir()
    assert "eval_accuracy" in done.stdout
