"""Tokenizers for prepared corpora: raw UTF-8 bytes, or a Hugging Face `tokenizers` file.

Every tokenizer reports, per token, how many bytes of the raw UTF-8 text it accounts for, so that
losses can be measured in bits per byte whatever the tokenizer. A prepared corpus records its
tokenizer in meta.json (`spec`) and, unless it is `bytes`, keeps it as `tokenizer.json` beside
the shards; `load_tokenizer` gives it back.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from linmix.data.shards import read_meta

TOKENIZER_FILE = "tokenizer.json"


@runtime_checkable
class Tokenizer(Protocol):
    """Text to token ids and back, with the raw bytes each token stands for."""

    vocab_size: int
    spec: dict

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """`(ids, token_bytes)`: int64 ids, and per token the UTF-8 bytes of `text` it covers
        (summing to `len(text.encode())`)."""
        ...

    def decode(self, ids: Iterable[int] | np.ndarray) -> str: ...


class ByteTokenizer:
    """One token per UTF-8 byte: ids 0..255."""

    vocab_size = 256

    @property
    def spec(self) -> dict:
        return {"kind": "bytes", "vocab_size": self.vocab_size}

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        ids = np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int64)
        return ids, np.ones(len(ids), np.int64)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        return bytes(np.asarray(ids, np.uint8).tolist()).decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer (a tokenizer.json file, or a trained object).

    `kind` is recorded in the spec: `json` for a user's file, `bpe` for one trained here.
    Special tokens are never added when encoding.
    """

    def __init__(self, source: str | Path | Any, kind: str = "json"):
        import tokenizers

        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"tokenizer file {path} does not exist")
            try:
                source = tokenizers.Tokenizer.from_file(str(path))
            except Exception as e:
                raise ValueError(f"{path} is not a valid tokenizer.json: {e}") from None
        self.hf = source
        self.kind = kind
        self.vocab_size = int(self.hf.get_vocab_size(with_added_tokens=True))

    @property
    def spec(self) -> dict:
        return {"kind": self.kind, "file": TOKENIZER_FILE, "vocab_size": self.vocab_size}

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        enc = self.hf.encode(text, add_special_tokens=False)
        ids = np.asarray(enc.ids, np.int64)
        return ids, _token_bytes(text, [end for _, end in enc.offsets])

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, path: str | Path) -> None:
        self.hf.save(str(path))


def _token_bytes(text: str, char_ends: list[int]) -> np.ndarray:
    """Bytes per token from each token's end (in characters): ends made monotone, converted to
    UTF-8 byte positions, the last token taking the rest, so the counts sum to the text's size."""
    n = len(char_ends)
    if n == 0:
        return np.zeros(0, np.int64)
    data = np.frombuffer(text.encode("utf-8"), np.uint8)
    starts = np.flatnonzero((data & 0xC0) != 0x80)  # a character starts at each non-continuation
    byte_at = np.append(starts, len(data))  # byte position of each character boundary
    ends = np.clip(np.maximum.accumulate(np.asarray(char_ends, np.int64)), 0, len(text))
    byte_ends = byte_at[ends]
    byte_ends[-1] = byte_at[-1]
    return np.diff(byte_ends, prepend=0)


def train_bpe(texts: Iterable[str], vocab_size: int, *, progress: bool = False) -> HFTokenizer:
    """A byte-level BPE tokenizer trained on `texts` (streamed); decoding restores any text."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    hf.train_from_iterator(texts, trainer=trainer)
    return HFTokenizer(hf, kind="bpe")


def parse_tokenizer_arg(arg: str) -> tuple[str, Any]:
    """`bytes` -> ("bytes", None); `bpe:VOCAB` -> ("bpe", VOCAB); a path -> ("json", Path)."""
    if arg == "bytes":
        return "bytes", None
    if arg.startswith("bpe:"):
        try:
            vocab = int(arg[4:])
        except ValueError:
            raise ValueError(f"tokenizer {arg!r}: expected bpe:VOCAB, e.g. bpe:8192") from None
        if not 256 < vocab <= 1 << 20:
            raise ValueError(f"tokenizer {arg!r}: VOCAB must be in 257..{1 << 20}")
        return "bpe", vocab
    path = Path(arg)
    if path.suffix != ".json":
        raise ValueError(
            f"tokenizer {arg!r}: expected `bytes`, `bpe:VOCAB` or a path to a tokenizer.json"
        )
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    return "json", path


def load_tokenizer(corpus_dir: str | Path) -> Tokenizer:
    """The tokenizer a prepared corpus was made with (from its meta.json)."""
    corpus_dir = Path(corpus_dir)
    spec = read_meta(corpus_dir)["tokenizer"]
    kind = spec.get("kind")
    if kind == "bytes":
        return ByteTokenizer()
    if kind in ("json", "bpe"):
        tok = HFTokenizer(corpus_dir / spec.get("file", TOKENIZER_FILE), kind=kind)
        if tok.vocab_size != spec["vocab_size"]:
            raise ValueError(
                f"{corpus_dir / TOKENIZER_FILE}: vocabulary of {tok.vocab_size}, meta.json "
                f"says {spec['vocab_size']}"
            )
        return tok
    raise ValueError(f"{corpus_dir}/meta.json: tokenizer kind {kind!r} cannot be loaded")
