"""Multi-query associative recall (MQAR) as a deterministic grain data source.

Follows the semantics of Zoology's ``multiquery_ar`` generator: a context of
``N`` key-value pairs ``k1 v1 ... kN vN`` followed by a query region in which
every key appears exactly once, at a power-law distributed distance from the
start of that region. The model reads the key and must emit its value at that
same position (next-token form), every other position is unsupervised (-100).

The context can be repeated ``num_passes`` times (the JRT variant);
``num_passes=1`` is plain MQAR.

Unlike Zoology, which materialises a whole split up front with one global RNG,
every example here is a pure function of ``(seed, split, idx)``. This makes
random access, shuffling, sharding across processes and checkpointing free:
nothing about an example depends on which other examples were read before it.
"""

from __future__ import annotations

import functools
import operator
from typing import Final, SupportsIndex

import numpy as np

IGNORE_INDEX: Final = -100
"""Target value of unsupervised positions (the usual cross-entropy ignore index)."""

# Each split gets its own component in the RNG key, so train and test examples
# come from disjoint RNG streams for every (seed, idx).
SPLIT_INDEX: Final[dict[str, int]] = {"train": 0, "test": 1}

Example = dict[str, np.ndarray]


def validate_mqar_args(
    *,
    vocab_size: int,
    seq_len: int,
    num_kv_pairs: int,
    power_a: float = 0.01,
    num_passes: int = 1,
) -> None:
    """Raises ``ValueError`` naming the first violated constraint, if any."""
    if num_kv_pairs < 1:
        raise ValueError(f"num_kv_pairs must be >= 1, got {num_kv_pairs}.")
    if num_passes < 1:
        raise ValueError(f"num_passes must be >= 1, got {num_passes}.")
    if seq_len % 2 != 0:
        raise ValueError(f"seq_len must be even (queries sit at even offsets), got {seq_len}.")
    if vocab_size < 4 or vocab_size % 2 != 0:
        raise ValueError(
            f"vocab_size must be even and >= 4 (it is split in half into keys and values), "
            f"got {vocab_size}."
        )
    if vocab_size <= seq_len:
        raise ValueError(f"vocab_size must be > seq_len, got vocab_size={vocab_size} <= {seq_len}.")
    context_len = 2 * num_kv_pairs * num_passes
    if context_len + 2 * num_kv_pairs > seq_len:
        raise ValueError(
            f"Too many key-value pairs: {num_kv_pairs} pairs x {num_passes} pass(es) need "
            f"{context_len} context tokens plus {2 * num_kv_pairs} query slots, "
            f"but seq_len is {seq_len}."
        )
    # Implied by the checks above, kept explicit so the message is clear if they change.
    if num_kv_pairs > vocab_size // 2 - 1:
        raise ValueError(
            f"num_kv_pairs={num_kv_pairs} exceeds the {vocab_size // 2 - 1} available keys."
        )
    if not power_a > 0:
        raise ValueError(f"power_a must be > 0, got {power_a}.")


@functools.lru_cache(maxsize=64)
def _gap_log_weights(space: int, power_a: float) -> np.ndarray:
    """Unnormalised log p_i for p_i ∝ a * i^(a-1), i = 1..space.

    Cached because it only depends on the configuration, and recomputing the
    logs would be a noticeable part of the per-example cost.
    """
    weights = (power_a - 1.0) * np.log(np.arange(1, space + 1, dtype=np.float64))
    weights.setflags(write=False)
    return weights


def _sample_gaps(rng: np.random.Generator, log_weights: np.ndarray, k: int) -> np.ndarray:
    """Draws ``k`` distinct slot indices with probabilities ∝ exp(log_weights).

    Uses the Gumbel-top-k trick: the k largest of ``log w_i + Gumbel`` have the
    same distribution as k successive weighted draws without replacement (what
    ``np.random.choice(p=..., replace=False)`` does), but in one vectorised pass.
    The order of the returned slots is arbitrary; callers pair them with keys
    that are already in uniformly random order, so no extra shuffle is needed.
    """
    scores = log_weights + rng.gumbel(size=log_weights.shape[0])
    return np.argpartition(-scores, k - 1)[:k]


def mqar_example(
    rng: np.random.Generator,
    *,
    vocab_size: int,
    seq_len: int,
    num_kv_pairs: int,
    power_a: float = 0.01,
    num_passes: int = 1,
    random_non_queries: bool = False,
) -> Example:
    """Generates one MQAR example from ``rng``.

    Returns:
      ``{"inputs": int32[seq_len], "targets": int32[seq_len]}``. ``targets`` is
      ``IGNORE_INDEX`` everywhere except at the query positions, where it holds
      the value paired with the key found at that position of ``inputs``.
    """
    validate_mqar_args(
        vocab_size=vocab_size,
        seq_len=seq_len,
        num_kv_pairs=num_kv_pairs,
        power_a=power_a,
        num_passes=num_passes,
    )
    n = num_kv_pairs
    half = vocab_size // 2
    # Keys come from [1, V/2) so that 0 stays free as the "no query" filler.
    keys = rng.choice(half - 1, size=n, replace=False) + 1
    values = rng.choice(half, size=n, replace=False) + half

    inputs = np.zeros(seq_len, dtype=np.int32)
    targets = np.full(seq_len, IGNORE_INDEX, dtype=np.int32)

    context = np.empty(2 * n, dtype=np.int32)
    context[0::2] = keys
    context[1::2] = values
    query_start = 2 * n * num_passes
    inputs[:query_start] = np.tile(context, num_passes)

    space = (seq_len - query_start) // 2
    gaps = _sample_gaps(rng, _gap_log_weights(space, float(power_a)), n)
    query_pos = query_start + 2 * gaps
    inputs[query_pos] = keys
    targets[query_pos] = values

    if random_non_queries:
        noise = rng.integers(0, vocab_size, size=seq_len - query_start, dtype=np.int32)
        query_region = inputs[query_start:]
        is_filler = query_region == 0
        query_region[is_filler] = noise[is_filler]
    return {"inputs": inputs, "targets": targets}


class MQARSource:
    """Random-access grain data source of MQAR examples.

    Example ``idx`` of split ``split`` is generated from
    ``np.random.default_rng([seed, SPLIT_INDEX[split], idx])``, so it is
    independent of access order, of other indices and of the other split.
    """

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        num_kv_pairs: int,
        num_examples: int,
        seed: int,
        power_a: float = 0.01,
        num_passes: int = 1,
        random_non_queries: bool = False,
        *,
        split: str = "train",
    ) -> None:
        validate_mqar_args(
            vocab_size=vocab_size,
            seq_len=seq_len,
            num_kv_pairs=num_kv_pairs,
            power_a=power_a,
            num_passes=num_passes,
        )
        if num_examples < 1:
            raise ValueError(f"num_examples must be >= 1, got {num_examples}.")
        if seed < 0:
            raise ValueError(f"seed must be >= 0 (it seeds a numpy SeedSequence), got {seed}.")
        if split not in SPLIT_INDEX:
            raise ValueError(f"split must be one of {sorted(SPLIT_INDEX)}, got {split!r}.")
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.num_kv_pairs = num_kv_pairs
        self.num_examples = num_examples
        self.seed = seed
        self.power_a = float(power_a)
        self.num_passes = num_passes
        self.random_non_queries = random_non_queries
        self.split = split

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, idx: SupportsIndex) -> Example:
        # operator.index accepts numpy integers (grain passes those) but not floats.
        i = operator.index(idx)
        if not 0 <= i < self.num_examples:
            raise IndexError(f"index {i} out of range for MQARSource of length {len(self)}.")
        rng = np.random.default_rng([self.seed, SPLIT_INDEX[self.split], i])
        return mqar_example(
            rng,
            vocab_size=self.vocab_size,
            seq_len=self.seq_len,
            num_kv_pairs=self.num_kv_pairs,
            power_a=self.power_a,
            num_passes=self.num_passes,
            random_non_queries=self.random_non_queries,
        )

    def __repr__(self) -> str:
        return (
            f"MQARSource(vocab_size={self.vocab_size}, seq_len={self.seq_len}, "
            f"num_kv_pairs={self.num_kv_pairs}, num_examples={self.num_examples}, "
            f"seed={self.seed}, power_a={self.power_a}, num_passes={self.num_passes}, "
            f"random_non_queries={self.random_non_queries}, split={self.split!r})"
        )


def make_mqar_sources(
    vocab_size: int,
    seq_len: int,
    num_kv_pairs: int,
    num_train: int,
    num_test: int,
    seed: int,
    **kwargs: float | int | bool,
) -> tuple[MQARSource, MQARSource]:
    """Builds the (train, test) sources; they share ``seed`` but never an RNG stream.

    ``kwargs`` are forwarded to ``MQARSource`` (``power_a``, ``num_passes``,
    ``random_non_queries``).
    """
    common = dict(vocab_size=vocab_size, seq_len=seq_len, num_kv_pairs=num_kv_pairs, seed=seed)
    train = MQARSource(**common, num_examples=num_train, split="train", **kwargs)
    test = MQARSource(**common, num_examples=num_test, split="test", **kwargs)
    return train, test
