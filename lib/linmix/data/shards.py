"""The on-disk format of a prepared corpus: memory-mapped token shards with document boundaries.

A prepared corpus is one directory (written by `python -m linmix.prepare`):

    meta.json            written last: its presence means the directory is complete
    tokenizer.json       the tokenizer (for `json` and `bpe` tokenizers; none for `bytes`)
    <split>.tokens       the split's tokens, all documents back to back, little-endian
                         uint16 (vocab <= 65536) or uint32
    <split>.docs.npy     int64 [documents + 1]: document d is tokens[docs[d]:docs[d + 1]]
    <split>.bytes        uint8 per token: the bytes of raw UTF-8 text the token stands for
                         (sums to each document's size in bytes; bits per byte use it)

Splits are `train` and `valid` (held-out whole documents). A directory is written under a
temporary name and renamed into place once `meta.json` is in it, so an interrupted run never
leaves a directory that a reader takes for finished. `meta.json` holds the format version, the
tokenizer, the token dtype and, per split, the document and token counts, the bytes, the SHA-256
of each file and the names of its documents.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
SPLITS = ("train", "valid")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def sha256(path: Path, block: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Split:
    """One split of a prepared corpus, memory-mapped: nothing is read until it is indexed."""

    tokens: np.ndarray  # [N] memmap
    docs: np.ndarray  # [D + 1] int64 offsets
    token_bytes: np.ndarray  # [N] uint8 memmap
    vocab_size: int

    @property
    def num_documents(self) -> int:
        return len(self.docs) - 1

    def document(self, d: int) -> np.ndarray:
        return self.tokens[self.docs[d] : self.docs[d + 1]]


def read_meta(directory: str | Path) -> dict:
    """The metadata of a finished corpus directory, or a clear error."""
    directory = Path(directory)
    path = directory / "meta.json"
    if not path.is_file():
        hint = "" if not directory.exists() else " (not a finished corpus directory)"
        raise FileNotFoundError(
            f"no prepared corpus at {directory}{hint}: run `python -m linmix.prepare` first"
        )
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format version {meta.get('format_version')}, expected {FORMAT_VERSION}; "
            "prepare the corpus again"
        )
    return meta


def open_split(directory: str | Path, split: str) -> Split:
    """Memory-map one split (`train` or `valid`) of a prepared corpus."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    directory = Path(directory)
    meta = read_meta(directory)
    info = meta["splits"][split]
    dtype = np.dtype(meta["dtype"])
    n = info["tokens"]
    tokens = _memmap(directory / f"{split}.tokens", dtype, n)
    token_bytes = _memmap(directory / f"{split}.bytes", np.dtype(np.uint8), n)
    docs = np.load(directory / f"{split}.docs.npy")
    if len(docs) != info["documents"] + 1 or docs[0] != 0 or docs[-1] != n:
        raise ValueError(f"{directory}/{split}.docs.npy does not match meta.json")
    return Split(tokens, docs, token_bytes, int(meta["tokenizer"]["vocab_size"]))


def _memmap(path: Path, dtype: np.dtype, n: int) -> np.ndarray:
    if n == 0:
        return np.zeros(0, dtype)
    size = path.stat().st_size
    if size != n * dtype.itemsize:
        raise ValueError(f"{path}: {size} bytes, expected {n} tokens of {dtype}")
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,))


class SplitWriter:
    """Appends documents of one split to its files, streaming (never the whole split in memory)."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype, vocab_size: int):
        self.directory, self.split = directory, split
        self.dtype, self.vocab_size = dtype, vocab_size
        self._tokens = open(directory / f"{split}.tokens", "wb")  # noqa: SIM115 (closed in close)
        self._bytes = open(directory / f"{split}.bytes", "wb")  # noqa: SIM115
        self.offsets = [0]
        self.names: list[str] = []
        self.num_bytes = 0

    def add(self, name: str, ids: np.ndarray, token_bytes: np.ndarray) -> None:
        """One document: its token ids and, per token, the raw bytes it stands for."""
        ids = np.asarray(ids)
        if len(ids) == 0:
            return
        if len(token_bytes) != len(ids):
            raise ValueError(f"document {name!r}: {len(token_bytes)} byte counts, {len(ids)} ids")
        top = int(ids.max())
        if ids.min() < 0 or top >= self.vocab_size:
            raise ValueError(
                f"document {name!r}: token id {top} is outside the vocabulary "
                f"(size {self.vocab_size})"
            )
        self._tokens.write(ids.astype(self.dtype).tobytes())
        self._bytes.write(np.minimum(token_bytes, 255).astype(np.uint8).tobytes())
        self.offsets.append(self.offsets[-1] + len(ids))
        self.names.append(name)
        self.num_bytes += int(np.sum(token_bytes))

    def abort(self) -> None:
        """Close the files without finishing the split (the caller removes them)."""
        self._tokens.close()
        self._bytes.close()

    def close(self) -> dict:
        self._tokens.close()
        self._bytes.close()
        np.save(self.directory / f"{self.split}.docs.npy", np.asarray(self.offsets, np.int64))
        files = [f"{self.split}.tokens", f"{self.split}.bytes", f"{self.split}.docs.npy"]
        return {
            "documents": len(self.names),
            "tokens": self.offsets[-1],
            "bytes": self.num_bytes,
            "names": self.names,
            "sha256": {f: sha256(self.directory / f) for f in files},
        }


class CorpusWriter:
    """Writes a corpus directory under a temporary name; `commit` renames it into place.

    Use as a context manager: on an exception the temporary directory is removed, and the target
    is untouched. `commit(meta)` writes meta.json last, then renames; an existing target (a
    different earlier preparation) is replaced only then.
    """

    def __init__(self, target: str | Path, vocab_size: int):
        self.target = Path(target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{self.target.name}.partial-"
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=self.target.parent))
        self.vocab_size = vocab_size
        self.dtype = token_dtype(vocab_size)
        self.splits = {s: SplitWriter(self.tmp, s, self.dtype, vocab_size) for s in SPLITS}

    def __enter__(self) -> CorpusWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            for w in self.splits.values():
                w.abort()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def commit(self, meta: dict) -> dict:
        meta = dict(meta, format_version=FORMAT_VERSION, dtype=self.dtype.str)
        meta["splits"] = {s: w.close() for s, w in self.splits.items()}
        meta["tokenizer"] = dict(meta.get("tokenizer", {}), vocab_size=self.vocab_size)
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.rename(self.target, old)
            os.rename(self.tmp, self.target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.tmp, self.target)
        return meta
