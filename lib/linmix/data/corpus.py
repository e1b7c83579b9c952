"""Documents of a user's text corpus, streamed as `(name, text)` from files on disk.

Formats: `text` (plain UTF-8 files; one document per file, per non-empty line, or per piece
between separators), `jsonl` (one document per record, its text in a named field) and `parquet`
(one document per row of a named column, read batch by batch). A directory input is searched
recursively, in sorted order, for files of the format (`*.txt`, `*.jsonl`, `*.parquet`; hidden
entries skipped); a file given explicitly is always read. A document's name is its file's path
relative to the input root, with `:line N`, `:record N` or `#k` for the part of the file it is.
Documents that are empty or only whitespace are skipped. Invalid UTF-8, a missing field or a
missing column is a `ValueError` that names the file and the place.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

FORMATS = ("text", "jsonl", "parquet")
DOCUMENT_MODES = ("file", "line", "separator")
SUFFIXES = {"text": ".txt", "jsonl": ".jsonl", "parquet": ".parquet"}
CHUNK = 1 << 20
PARQUET_BATCH = 1024


@dataclass(frozen=True)
class InputFile:
    """A file to read and the name its documents carry (relative to its input root)."""

    path: Path
    name: str


def check_options(format: str, document: str, separator: str | None) -> None:
    """A clear error for an unknown format or document mode, or a misplaced separator."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if document not in DOCUMENT_MODES:
        raise ValueError(f"document must be one of {', '.join(DOCUMENT_MODES)}, got {document!r}")
    if format != "text" and document != "file":
        raise ValueError(f"document={document!r} applies to format=text only ({format}: records)")
    if document == "separator" and not separator:
        raise ValueError("document=separator needs a non-empty separator, e.g. '\\n\\n\\n'")
    if separator and document != "separator":
        raise ValueError(f"a separator is used with document=separator only, not {document!r}")


def list_files(inputs: Sequence[str | Path], format: str = "text") -> list[InputFile]:
    """The files behind `inputs` (files, or directories searched for the format's suffix)."""
    suffix = SUFFIXES[format]
    files = []
    for item in inputs:
        root = Path(item)
        if not root.exists():
            raise FileNotFoundError(f"input {root} does not exist")
        if root.is_file():
            files.append(InputFile(root, root.name))
            continue
        found = []
        for path in root.rglob(f"*{suffix}"):
            rel = path.relative_to(root)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                found.append(InputFile(path, rel.as_posix()))
        files += sorted(found, key=lambda f: f.name)
    return files


def fingerprint(paths: Sequence[Path]) -> list[dict]:
    """Path, size and modification time of each file: changes when an input does."""
    out = []
    for path in paths:
        st = path.stat()
        out.append({"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def read_documents(
    files: Sequence[InputFile],
    *,
    format: str = "text",
    document: str = "file",
    separator: str | None = None,
    field: str = "text",
    column: str = "text",
) -> Iterator[tuple[str, str]]:
    """`(name, text)` of every non-empty document of `files`, in order, one at a time."""
    check_options(format, document, separator)
    for f in files:
        if format == "jsonl":
            docs = read_jsonl(f, field)
        elif format == "parquet":
            docs = read_parquet(f, column)
        elif document == "line":
            docs = read_lines(f)
        elif document == "separator":
            docs = read_pieces(f, separator or "")
        else:
            docs = read_file(f)
        for name, text in docs:
            if text and not text.isspace():
                yield name, text


def decode(data: bytes, path: Path, offset: int = 0) -> str:
    """UTF-8 text of `data` (found at byte `offset` of `path`), or an error naming the place."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: invalid UTF-8 at byte offset {offset + e.start} ({e.reason})"
        ) from None


def read_file(f: InputFile) -> Iterator[tuple[str, str]]:
    """The whole file as one document."""
    yield f.name, decode(f.path.read_bytes(), f.path)


def read_lines(f: InputFile) -> Iterator[tuple[str, str]]:
    """One document per line (without its line ending), named `name:line N`."""
    offset = 0
    with open(f.path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.removesuffix(b"\n").removesuffix(b"\r") if raw.endswith(b"\n") else raw
            yield f"{f.name}:line {lineno}", decode(line, f.path, offset)
            offset += len(raw)


def read_pieces(f: InputFile, separator: str) -> Iterator[tuple[str, str]]:
    """One document per piece of the file between separators, named `name#k` (k from 1)."""
    sep = separator.encode("utf-8")
    buf = bytearray()
    base = 0  # file offset of buf[0]
    search = 0  # buf has no separator starting before this
    k = 0
    with open(f.path, "rb") as fh:
        while True:
            chunk = fh.read(CHUNK)
            buf += chunk
            start = 0
            while (i := buf.find(sep, max(start, search))) >= 0:
                k += 1
                yield f"{f.name}#{k}", decode(bytes(buf[start:i]), f.path, base + start)
                start = i + len(sep)
            if not chunk:
                break
            del buf[:start]
            base += start
            search = max(0, len(buf) - len(sep) + 1)
    k += 1
    yield f"{f.name}#{k}", decode(bytes(buf[start:]), f.path, base + start)


def read_jsonl(f: InputFile, field: str) -> Iterator[tuple[str, str]]:
    """One document per JSON record (line), its text in `field`, named `name:record N`."""
    offset = 0
    with open(f.path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = decode(raw, f.path, offset)
            offset += len(raw)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{f.path}: line {lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{f.path}: line {lineno}: a record must be a JSON object")
            if field not in record:
                present = ", ".join(map(repr, record)) or "none"
                raise ValueError(
                    f"{f.path}: line {lineno}: record has no field {field!r} (fields: {present})"
                )
            text = record[field]
            if text is not None and not isinstance(text, str):
                raise ValueError(
                    f"{f.path}: line {lineno}: field {field!r} is {type(text).__name__}, "
                    "expected a string"
                )
            yield f"{f.name}:record {lineno}", text or ""


def read_parquet(f: InputFile, column: str) -> Iterator[tuple[str, str]]:
    """One document per row of `column` (string or binary), named `name:record N` (N from 1)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f.path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{f.path}: not a readable Parquet file ({e})") from None
    schema = pf.schema_arrow
    if column not in schema.names:
        present = ", ".join(map(repr, schema.names)) or "none"
        raise ValueError(f"{f.path}: no column {column!r} (columns: {present})")
    kind = schema.field(column).type
    is_text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    if not (is_text or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        raise ValueError(f"{f.path}: column {column!r} has type {kind}, expected string")
    row = 0
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH, columns=[column]):
        for value in batch.column(0).to_pylist():
            row += 1
            if isinstance(value, bytes):
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(
                        f"{f.path}: record {row}: invalid UTF-8 at byte offset {e.start} of "
                        f"column {column!r}"
                    ) from None
            yield f"{f.name}:record {row}", value or ""
