"""The MAD synthetic suite (Poli et al. 2024, arXiv:2403.17844) as deterministic grain sources.

Six token-manipulation tasks with the baseline settings of the reference suite
(``athms/mad-lab``, ``configs/tasks/*.yml`` and ``MADConfig``), listed in
``MAD_TASKS``. As in ``linmix.data.mqar``, every example is a pure function of
``(seed, split, idx)``, train and test come from disjoint RNG streams, and an
example is ``{"inputs": int32[T], "targets": int32[T]}`` where ``targets[t]`` is
what the model must emit after reading ``inputs[: t + 1]`` and every
unsupervised position holds ``IGNORE_INDEX``. The vocabulary layouts follow the
reference generators (with ``multi_query=True``, the baseline for the recall
tasks), so a ``vocab_size`` means the same thing here as there.

Tasks (``T = seq_len``):

* ``in_context_recall``: ``k v k v ...`` with keys from ``[0, K)`` and values
  from ``[K, 2K)``; within an example each key keeps one value. The value after
  every key that was already seen earlier in the example is supervised, and the
  last pair always repeats an earlier key.
* ``noisy_in_context_recall``: the same, but each pair slot is replaced with
  probability ``frac_noise`` by two tokens of a separate noise vocabulary (the
  top ``noise_vocab_size`` ids); noise is never supervised.
* ``fuzzy_in_context_recall``: keys and values are spans of 1..``k_motif_size``
  and 1..``v_motif_size`` distinct tokens; all value tokens of a repeated key
  are supervised. Sequences are left-padded with ``vocab_size - 1``. As in the
  reference, test examples only use keys of the full ``k_motif_size``.
* ``selective_copying``: ``num_tokens_to_copy`` data tokens scattered among
  blank tokens (``vocab_size - 2``), then a copy token (``vocab_size - 1``) and
  ``num_tokens_to_copy`` blanks; at those blank positions the model must emit
  the data tokens in order (answers are never fed back, as in the reference).
* ``memorization``: ``k v k v ...`` over a fixed key->value bijection that
  depends on ``seed`` only (shared by both splits); values are supervised.
  Keys are distinct within an example, so no value can be recalled from context.
  The reference instead feeds ``k <insert>`` and supervises the insert token;
  here the value is the next token after its key.
* ``compression``: a random sequence ``s`` of ``seq_len // 2`` tokens, the
  compression token ``vocab_size - 1``, then ``s`` again; each reconstruction
  token is supervised at the position before it. The reference trains an
  encoder-decoder to reproduce ``s`` plus the compression token from the
  encoder's output at the last position; this causal form asks a single model
  to reconstruct ``s`` from its state after the compression token, reading its
  own previous reconstruction tokens (teacher forcing) as it goes.

Differences from the reference kept on purpose: the reference supervises every
next token of training examples and masks only at test time; here both splits
use the task mask. Recall examples are ``seq_len`` long (the reference returns
``seq_len - 1``).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any, Final, SupportsIndex

import numpy as np

from linmix.data.mqar import IGNORE_INDEX, SPLIT_INDEX, Example

# Stream id of the memorization dictionary: after the split ids, so it never
# coincides with an example's ``[seed, split, idx]`` stream.
_DICT_STREAM: Final = len(SPLIT_INDEX)

MAD_TASKS: Final[dict[str, dict[str, Any]]] = {
    "in_context_recall": dict(vocab_size=16, seq_len=128, num_train=12_800, num_test=1_280),
    "noisy_in_context_recall": dict(
        vocab_size=32,
        seq_len=128,
        noise_vocab_size=16,
        frac_noise=0.2,
        num_train=12_800,
        num_test=1_280,
    ),
    "fuzzy_in_context_recall": dict(
        vocab_size=16,
        seq_len=128,
        k_motif_size=3,
        v_motif_size=3,
        num_train=12_800,
        num_test=1_280,
    ),
    "selective_copying": dict(
        vocab_size=16, seq_len=256, num_tokens_to_copy=16, num_train=12_800, num_test=1_280
    ),
    "memorization": dict(vocab_size=256, seq_len=32, num_train=256, num_test=1_280),
    # seq_len 64: a 32-token block (the reference's seq_len) plus its reconstruction.
    "compression": dict(vocab_size=16, seq_len=64, num_train=12_800, num_test=1_280),
}
"""Baseline settings per task; ``num_train``/``num_test`` are split sizes, the rest are
arguments of the task's example function."""


def _sup_to_targets(x: np.ndarray, sup: np.ndarray) -> np.ndarray:
    """Next-token targets: ``targets[t] = x[t + 1]`` where ``x[t + 1]`` is supervised."""
    targets = np.full(x.shape[0], IGNORE_INDEX, dtype=np.int32)
    nxt = np.flatnonzero(sup[1:])
    targets[nxt] = x[nxt + 1]
    return targets


# ------------------------------------------------------------------ validation


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


def _validate_recall(vocab_size, seq_len, noise_vocab_size=0, frac_noise=0.0):
    _check(seq_len >= 4 and seq_len % 2 == 0, f"seq_len must be even and >= 4, got {seq_len}.")
    _check(noise_vocab_size >= 0, f"noise_vocab_size must be >= 0, got {noise_vocab_size}.")
    _check(0.0 <= frac_noise < 1.0, f"frac_noise must be in [0, 1), got {frac_noise}.")
    _check(
        frac_noise == 0 or noise_vocab_size > 0,
        "noise_vocab_size must be > 0 when frac_noise > 0.",
    )
    _check(
        vocab_size - noise_vocab_size >= 2,
        f"vocab_size - noise_vocab_size must be >= 2 (one key and one value), "
        f"got {vocab_size} - {noise_vocab_size}.",
    )


def _validate_fuzzy(vocab_size, seq_len, k_motif_size=3, v_motif_size=3):
    _check(k_motif_size >= 1, f"k_motif_size must be >= 1, got {k_motif_size}.")
    _check(v_motif_size >= 1, f"v_motif_size must be >= 1, got {v_motif_size}.")
    n = vocab_size - 1
    _check(
        n // 2 >= k_motif_size and n - n // 2 >= v_motif_size,
        f"vocab_size={vocab_size} leaves {n // 2} key and {n - n // 2} value tokens, too few "
        f"for motifs of {k_motif_size} and {v_motif_size} distinct tokens.",
    )
    _check(
        seq_len >= 2 * (k_motif_size + v_motif_size),
        f"seq_len must be >= 2 * (k_motif_size + v_motif_size) = "
        f"{2 * (k_motif_size + v_motif_size)}, got {seq_len}.",
    )


def _validate_copying(vocab_size, seq_len, num_tokens_to_copy=16):
    _check(vocab_size >= 3, f"vocab_size must be >= 3 (data, blank, copy), got {vocab_size}.")
    _check(num_tokens_to_copy >= 1, f"num_tokens_to_copy must be >= 1, got {num_tokens_to_copy}.")
    _check(
        seq_len > 2 * num_tokens_to_copy + 1,
        f"seq_len must be > 2 * num_tokens_to_copy + 1 = {2 * num_tokens_to_copy + 1}, "
        f"got {seq_len}.",
    )


def _validate_memorization(vocab_size, seq_len):
    _check(
        vocab_size >= 2 and vocab_size % 2 == 0,
        f"vocab_size must be even and >= 2 (half keys, half values), got {vocab_size}.",
    )
    _check(seq_len >= 2 and seq_len % 2 == 0, f"seq_len must be even and >= 2, got {seq_len}.")
    _check(
        seq_len // 2 <= vocab_size // 2,
        f"seq_len // 2 = {seq_len // 2} distinct keys per example exceed the "
        f"{vocab_size // 2} keys of vocab_size={vocab_size}.",
    )


def _validate_compression(vocab_size, seq_len):
    _check(vocab_size >= 2, f"vocab_size must be >= 2, got {vocab_size}.")
    _check(seq_len >= 2 and seq_len % 2 == 0, f"seq_len must be even and >= 2, got {seq_len}.")


_VALIDATORS: Final[dict[str, Callable[..., None]]] = {
    "in_context_recall": _validate_recall,
    "noisy_in_context_recall": _validate_recall,
    "fuzzy_in_context_recall": _validate_fuzzy,
    "selective_copying": _validate_copying,
    "memorization": _validate_memorization,
    "compression": _validate_compression,
}


def validate_mad_args(task: str, **kwargs: Any) -> None:
    """Raises ``ValueError`` naming the first violated constraint of ``task``'s arguments."""
    if task not in MAD_TASKS:
        raise ValueError(f"task must be one of {sorted(MAD_TASKS)}, got {task!r}.")
    allowed = set(MAD_TASKS[task]) - {"num_train", "num_test"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"unknown argument(s) {unknown} for task {task!r}; allowed: {sorted(allowed)}."
        )
    for name in ("vocab_size", "seq_len"):
        if name not in kwargs:
            raise ValueError(f"{name} is required for task {task!r}.")
    _VALIDATORS[task](**kwargs)


# ------------------------------------------------------------------ example functions


def in_context_recall_example(
    rng: np.random.Generator,
    *,
    vocab_size: int,
    seq_len: int,
    noise_vocab_size: int = 0,
    frac_noise: float = 0.0,
) -> Example:
    """(Noisy) in-context recall; see the module docstring."""
    _validate_recall(vocab_size, seq_len, noise_vocab_size, frac_noise)
    clean = vocab_size - noise_vocab_size
    num_keys = clean // 2
    n_body = seq_len // 2 - 1
    value_of = rng.integers(num_keys, clean, size=num_keys)
    keys = rng.integers(0, num_keys, size=n_body)
    is_noise = rng.random(n_body) < frac_noise
    is_noise[rng.integers(n_body)] = False  # at least one pair before the probe
    noise = rng.integers(clean, vocab_size, size=(n_body, 2)) if frac_noise > 0 else None

    x = np.empty(seq_len, dtype=np.int32)
    sup = np.zeros(seq_len, dtype=bool)
    seen: dict[int, None] = {}  # insertion-ordered set
    for i in range(n_body):
        if is_noise[i]:
            x[2 * i : 2 * i + 2] = noise[i]
            continue
        k = int(keys[i])
        x[2 * i], x[2 * i + 1] = k, value_of[k]
        sup[2 * i + 1] = k in seen
        seen[k] = None
    probe = list(seen)[rng.integers(len(seen))]
    x[-2], x[-1] = probe, value_of[probe]
    sup[-1] = True
    return {"inputs": x, "targets": _sup_to_targets(x, sup)}


def _distinct_tuple(rng: np.random.Generator, low: int, high: int, size: int) -> tuple[int, ...]:
    """A uniform ordered tuple of ``size`` distinct tokens from ``[low, high)``."""
    return tuple(int(t) for t in rng.choice(high - low, size=size, replace=False) + low)


def fuzzy_in_context_recall_example(
    rng: np.random.Generator,
    *,
    vocab_size: int,
    seq_len: int,
    k_motif_size: int = 3,
    v_motif_size: int = 3,
    full_size_keys: bool = False,
) -> Example:
    """Fuzzy in-context recall; ``full_size_keys`` (test split) uses only ``k_motif_size`` keys."""
    _validate_fuzzy(vocab_size, seq_len, k_motif_size, v_motif_size)
    pad = vocab_size - 1
    num_keys = pad // 2
    budget = seq_len - (k_motif_size + v_motif_size)  # room kept for the final probe pair
    tokens: list[int] = []
    sup: list[bool] = []
    value_of: dict[tuple[int, ...], tuple[int, ...]] = {}
    while True:
        k_size = k_motif_size if full_size_keys else int(rng.integers(1, k_motif_size + 1))
        v_size = int(rng.integers(1, v_motif_size + 1))
        key = _distinct_tuple(rng, 0, num_keys, k_size)
        seen = key in value_of
        value = value_of[key] if seen else _distinct_tuple(rng, num_keys, pad, v_size)
        if len(tokens) + len(key) + len(value) > budget:
            break
        value_of[key] = value
        tokens += key + value
        sup += [False] * len(key) + [seen] * len(value)
    keys = list(value_of)
    probe = keys[rng.integers(len(keys))]
    tokens += probe + value_of[probe]
    sup += [False] * len(probe) + [True] * len(value_of[probe])

    n_pad = seq_len - len(tokens)
    x = np.array([pad] * n_pad + tokens, dtype=np.int32)
    mask = np.array([False] * n_pad + sup, dtype=bool)
    return {"inputs": x, "targets": _sup_to_targets(x, mask)}


def selective_copying_example(
    rng: np.random.Generator, *, vocab_size: int, seq_len: int, num_tokens_to_copy: int = 16
) -> Example:
    """Selective copying; see the module docstring."""
    _validate_copying(vocab_size, seq_len, num_tokens_to_copy)
    n = num_tokens_to_copy
    blank, copy = vocab_size - 2, vocab_size - 1
    region = seq_len - n - 1
    data = rng.integers(0, vocab_size - 2, size=n, dtype=np.int32)
    where = np.sort(rng.choice(region, size=n, replace=False))
    inputs = np.full(seq_len, blank, dtype=np.int32)
    inputs[where] = data
    inputs[region] = copy
    targets = np.full(seq_len, IGNORE_INDEX, dtype=np.int32)
    targets[region + 1 :] = data
    return {"inputs": inputs, "targets": targets}


@functools.lru_cache(maxsize=16)
def memorization_dictionary(seed: int, vocab_size: int) -> np.ndarray:
    """The fixed value of every key ``k`` in ``[0, vocab_size // 2)``: a bijection onto
    ``[vocab_size // 2, vocab_size)`` that depends on ``seed`` only."""
    half = vocab_size // 2
    rng = np.random.default_rng([seed, _DICT_STREAM, 0])
    values = (rng.permutation(half) + half).astype(np.int32)
    values.setflags(write=False)
    return values


def memorization_example(
    rng: np.random.Generator, *, vocab_size: int, seq_len: int, dictionary: np.ndarray
) -> Example:
    """``seq_len // 2`` distinct keys, each followed by ``dictionary[key]``."""
    _validate_memorization(vocab_size, seq_len)
    if dictionary.shape != (vocab_size // 2,):
        raise ValueError(
            f"dictionary must have shape ({vocab_size // 2},), got {dictionary.shape}."
        )
    keys = rng.choice(vocab_size // 2, size=seq_len // 2, replace=False)
    x = np.empty(seq_len, dtype=np.int32)
    x[0::2] = keys
    x[1::2] = dictionary[keys]
    sup = np.zeros(seq_len, dtype=bool)
    sup[1::2] = True
    return {"inputs": x, "targets": _sup_to_targets(x, sup)}


def compression_example(rng: np.random.Generator, *, vocab_size: int, seq_len: int) -> Example:
    """``s``, the compression token, ``s`` again (``len(s) = seq_len // 2``), shifted by one."""
    _validate_compression(vocab_size, seq_len)
    half = seq_len // 2
    s = rng.integers(0, vocab_size - 1, size=half, dtype=np.int32)
    x = np.concatenate([s, np.array([vocab_size - 1], dtype=np.int32), s])
    targets = np.full(seq_len, IGNORE_INDEX, dtype=np.int32)
    targets[half:] = x[half + 1 :]
    return {"inputs": x[:seq_len], "targets": targets}


# ------------------------------------------------------------------ sources


class MADSource:
    """Random-access grain data source of one MAD task.

    Example ``idx`` of ``split`` is generated from
    ``np.random.default_rng([seed, SPLIT_INDEX[split], idx])``. Task arguments
    default to ``MAD_TASKS[task]`` and can be overridden by keyword.
    """

    def __init__(
        self, task: str, num_examples: int, seed: int, *, split: str = "train", **task_kwargs: Any
    ) -> None:
        if task not in MAD_TASKS:
            raise ValueError(f"task must be one of {sorted(MAD_TASKS)}, got {task!r}.")
        kwargs = {k: v for k, v in MAD_TASKS[task].items() if k not in ("num_train", "num_test")}
        kwargs.update(task_kwargs)
        validate_mad_args(task, **kwargs)
        if num_examples < 1:
            raise ValueError(f"num_examples must be >= 1, got {num_examples}.")
        if seed < 0:
            raise ValueError(f"seed must be >= 0 (it seeds a numpy SeedSequence), got {seed}.")
        if split not in SPLIT_INDEX:
            raise ValueError(f"split must be one of {sorted(SPLIT_INDEX)}, got {split!r}.")
        self.task = task
        self.num_examples = num_examples
        self.seed = seed
        self.split = split
        self.task_kwargs = kwargs
        self.vocab_size = int(kwargs["vocab_size"])
        self.seq_len = int(kwargs["seq_len"])
        call = dict(kwargs)
        if task == "fuzzy_in_context_recall":
            call["full_size_keys"] = split != "train"
        elif task == "memorization":
            call["dictionary"] = memorization_dictionary(seed, self.vocab_size)
        fn = _EXAMPLE_FNS[task]
        self._make = functools.partial(fn, **call)

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, idx: SupportsIndex) -> Example:
        i = operator.index(idx)
        if not 0 <= i < self.num_examples:
            raise IndexError(f"index {i} out of range for MADSource of length {len(self)}.")
        return self._make(np.random.default_rng([self.seed, SPLIT_INDEX[self.split], i]))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.task_kwargs.items())
        return (
            f"MADSource(task={self.task!r}, num_examples={self.num_examples}, seed={self.seed}, "
            f"split={self.split!r}, {args})"
        )


_EXAMPLE_FNS: Final[dict[str, Callable[..., Example]]] = {
    "in_context_recall": in_context_recall_example,
    "noisy_in_context_recall": in_context_recall_example,
    "fuzzy_in_context_recall": fuzzy_in_context_recall_example,
    "selective_copying": selective_copying_example,
    "memorization": memorization_example,
    "compression": compression_example,
}


def make_mad_sources(
    task: str,
    seed: int,
    num_train: int | None = None,
    num_test: int | None = None,
    **task_kwargs: Any,
) -> tuple[MADSource, MADSource]:
    """Builds the (train, test) sources of ``task`` with its baseline split sizes unless given."""
    if task not in MAD_TASKS:
        raise ValueError(f"task must be one of {sorted(MAD_TASKS)}, got {task!r}.")
    defaults = MAD_TASKS[task]
    num_train = defaults["num_train"] if num_train is None else num_train
    num_test = defaults["num_test"] if num_test is None else num_test
    train = MADSource(task, num_train, seed, split="train", **task_kwargs)
    test = MADSource(task, num_test, seed, split="test", **task_kwargs)
    return train, test
