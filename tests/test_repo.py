"""The repository explains itself: no import-path edits, and every document it cites is in it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("lib", "tests", "experiments", "ml_collections_configs", "docs", "README.md")
SKIP = (".venv", ".ci-venv", "egg-info", "__pycache__", "/results/")


def _files(*suffixes: str) -> list[Path]:
    out = []
    for name in SOURCES:
        base = ROOT / name
        paths = [base] if base.is_file() else base.rglob("*")
        out += [p for p in paths if p.suffix in suffixes and not any(s in str(p) for s in SKIP)]
    return out


def test_no_sys_path_edits() -> None:
    pattern = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*[+]?=")
    offenders = [str(p.relative_to(ROOT)) for p in _files(".py") if pattern.search(p.read_text())]
    assert not offenders, offenders


def test_cited_documents_exist() -> None:
    """A Markdown file named in code or docs (`docs/forms.md`, `README.md`) is a file of the
    repository; documents that live outside it are never cited. Markdown a script writes (its
    results) is exempt."""
    cited = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")
    missing = []
    for path in _files(".py", ".md"):
        for name in set(cited.findall(path.read_text())):
            here = [ROOT / name, path.parent / name, ROOT / "docs" / name]
            here += [ROOT / "experiments" / "bench" / name]
            written = "results" in name and "experiments" in str(path)
            if not written and not any(p.is_file() for p in here):
                missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, missing
