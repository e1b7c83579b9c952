"""Language-model examples from a prepared corpus (`linmix.data.shards`), as grain sources.

An example is one row of T input tokens with their next-token targets:

    inputs       [T] int32   the tokens read
    targets      [T] int32   the token that follows each input, IGNORE_INDEX on padding
    segment_ids  [T] int32   1, 2, .. per document piece in the row, 0 on padding
    positions    [T] int32   position inside the piece (restarts at every piece)
    target_bytes [T] int32   raw UTF-8 bytes of each target (0 on padding): bits per byte

Two layouts (`mode`):

- `pack` (the default): documents stay whole and apart. A document of L tokens gives L - 1
  predictions; rows are filled with documents in corpus order (next fit: a document that does
  not fit in the rest of the row starts the next one, the rest is padding). A document with more
  than T predictions is cut into pieces of T (consecutive pieces share one token, so every
  token after a document's first is a target exactly once); each piece is its own segment and
  starts from a fresh state. `PackedSource.stats` counts the documents cut this way, and the
  trainer prints it.
- `cut`: the split's documents concatenated and cut every T tokens, documents not marked (one
  segment per row, positions 0..T-1): the usual "concatenate and cut" baseline.

Only the packing index (`PackIndex`, a few integers per document) lives in memory; tokens are
read from the memory-mapped shard row by row. Sources pickle as their path (grain worker
processes reopen the shard). Every row is a pure function of its index, so shuffling, process
sharding and exact resume come from the grain pipeline (`linmix.data.pipeline`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from linmix.data.mqar import IGNORE_INDEX
from linmix.data.shards import Split, open_split

MODES = ("pack", "cut")


@dataclasses.dataclass(frozen=True)
class PackStats:
    rows: int
    documents: int
    split_documents: int  # documents longer than T predictions, cut into pieces
    skipped_documents: int  # one-token documents: nothing to predict
    predictions: int
    fill: float  # fraction of the row slots that hold a prediction

    def describe(self, seq_len: int) -> str:
        cut = (
            f"; {self.split_documents} documents longer than {seq_len} tokens are cut into pieces "
            "(each piece starts from a fresh state)"
            if self.split_documents
            else ""
        )
        return (
            f"{self.rows} rows of {seq_len} tokens from {self.documents} documents, "
            f"{self.fill:.1%} filled{cut}"
        )


@dataclasses.dataclass(frozen=True)
class PackIndex:
    """Where the rows of `pack` mode come from, in O(documents) memory.

    Rows are numbered in corpus order and are of two kinds. A run of full rows holds the first
    pieces of T predictions of one long document: row full_row[i] + j starts at token
    full_token[i] + j * T. A packed row holds whole documents (or the last piece of a long one):
    row packed_row[p] holds pieces piece_offsets[p]:piece_offsets[p + 1] of (piece_start,
    piece_size)."""

    rows: int
    full_row: np.ndarray  # [F] int64, sorted
    full_count: np.ndarray  # [F] int64
    full_token: np.ndarray  # [F] int64
    packed_row: np.ndarray  # [P] int64, sorted
    piece_offsets: np.ndarray  # [P + 1] int64
    piece_start: np.ndarray  # int64: first token of the piece
    piece_size: np.ndarray  # int64: its predictions

    def pieces(self, row: int, T: int) -> list[tuple[int, int]]:
        """(first token, predictions) of each piece of `row`, in order."""
        i = int(np.searchsorted(self.full_row, row, side="right")) - 1
        if i >= 0 and row < self.full_row[i] + self.full_count[i]:
            return [(int(self.full_token[i] + (row - self.full_row[i]) * T), T)]
        p = int(np.searchsorted(self.packed_row, row))
        a, b = self.piece_offsets[p], self.piece_offsets[p + 1]
        spans = zip(self.piece_start[a:b], self.piece_size[a:b], strict=True)
        return [(int(s), int(n)) for s, n in spans]


def pack_index(docs: np.ndarray, seq_len: int) -> PackIndex:
    """Next-fit packing of documents (offsets [D + 1]) into rows of `seq_len` predictions."""
    T = seq_len
    lengths = np.diff(docs) - 1  # predictions per document
    full_row, full_count, full_token = [], [], []
    packed_row, piece_offsets, piece_start, piece_size = [], [0], [], []
    row, used = -1, T  # the last row started and how much of it is filled
    for d in np.flatnonzero(lengths > 0):
        first, n = int(docs[d]), int(lengths[d])
        full = n // T
        if full:  # whole rows of T predictions, each alone in its row
            full_row.append(row + 1)
            full_count.append(full)
            full_token.append(first)
            row, used = row + full, T
        rest = n - full * T
        if rest:
            if used + rest > T:  # start a packed row
                row, used = row + 1, 0
                packed_row.append(row)
                piece_offsets.append(piece_offsets[-1])
            piece_start.append(first + full * T)
            piece_size.append(rest)
            piece_offsets[-1] += 1
            used += rest
    if row < 0:
        raise ValueError("no document has two or more tokens: nothing to predict")

    def arr(x):
        return np.asarray(x, np.int64)

    return PackIndex(
        row + 1,
        arr(full_row),
        arr(full_count),
        arr(full_token),
        arr(packed_row),
        arr(piece_offsets),
        arr(piece_start),
        arr(piece_size),
    )


class PackedSource:
    """Rows of T tokens over one split of a prepared corpus (module docstring)."""

    def __init__(self, directory: str | Path, split: str, seq_len: int, mode: str = "pack"):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.directory, self.split_name = Path(directory), split
        self.seq_len, self.mode = seq_len, mode
        self.split: Split = open_split(directory, split)
        docs = self.split.docs
        n_docs = self.split.num_documents
        if mode == "pack":
            self.index = pack_index(docs, seq_len)
            rows = self.index.rows
            lengths = np.diff(docs) - 1
            preds = int(np.maximum(lengths, 0).sum())
            split_docs = int(np.sum(lengths > seq_len))
            skipped = int(np.sum(lengths <= 0))
        else:
            rows = max(0, (len(self.split.tokens) - 1) // seq_len)
            if rows == 0:
                raise ValueError(
                    f"{directory}/{split}: {len(self.split.tokens)} tokens, fewer than "
                    f"seq_len + 1 = {seq_len + 1}"
                )
            preds, split_docs, skipped = rows * seq_len, 0, 0
        self.stats = PackStats(rows, n_docs, split_docs, skipped, preds, preds / (rows * seq_len))

    def __len__(self) -> int:
        return self.stats.rows

    def __getitem__(self, idx) -> dict[str, np.ndarray]:
        idx = int(idx)
        if not 0 <= idx < len(self):
            raise IndexError(f"row {idx} out of range [0, {len(self)})")
        T = self.seq_len
        tokens, token_bytes = self.split.tokens, self.split.token_bytes
        if self.mode == "cut":
            window = np.asarray(tokens[idx * T : idx * T + T + 1], np.int32)
            tb = np.asarray(token_bytes[idx * T + 1 : idx * T + T + 1], np.int32)
            return {
                "inputs": window[:-1],
                "targets": window[1:],
                "segment_ids": np.ones(T, np.int32),
                "positions": np.arange(T, dtype=np.int32),
                "target_bytes": tb,
            }
        out = {
            "inputs": np.zeros(T, np.int32),
            "targets": np.full(T, IGNORE_INDEX, np.int32),
            "segment_ids": np.zeros(T, np.int32),
            "positions": np.zeros(T, np.int32),
            "target_bytes": np.zeros(T, np.int32),
        }
        at = 0
        for seg, (s, n) in enumerate(self.index.pieces(idx, T), 1):
            window = np.asarray(tokens[s : s + n + 1], np.int32)
            out["inputs"][at : at + n] = window[:-1]
            out["targets"][at : at + n] = window[1:]
            out["segment_ids"][at : at + n] = seg
            out["positions"][at : at + n] = np.arange(n)
            out["target_bytes"][at : at + n] = token_bytes[s + 1 : s + n + 1]
            at += n
        return out

    def __getstate__(self) -> dict:
        return {k: getattr(self, k) for k in ("directory", "split_name", "seq_len", "mode")}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["directory"], state["split_name"], state["seq_len"], state["mode"])
