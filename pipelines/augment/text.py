"""EDA text augmentation (Wei & Zou, 2019) on padded token-id batches, vectorised in numpy.

The four "easy data augmentation" operations (synonym replacement, random insertion, random swap
and random deletion) work here on the int32 ``(N, L)`` id rows of :mod:`pipelines.data.text`
rather than on strings, so a Ray Data ``map_batches`` step can augment a whole batch with a few
array operations and no per-row Python loop. Every function keeps the row invariant the features
rely on (PAD only at the end of a row), returns a new array and draws all its randomness from the
given generator, so a batch is reproducible from its seed.

``strength`` is the per-word probability for synonym, insert and delete (the paper's alpha) and
the fraction of a row's length that is swapped for swap.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipelines.augment.spec import TransformSpec
from pipelines.augment.tokens import PAD, SynonymTable

TextTransform = Callable[[np.ndarray, float, np.random.Generator, SynonymTable], np.ndarray]


def _check(tokens: np.ndarray, strength: float, synonyms: SynonymTable) -> np.ndarray:
    """Validate the common arguments and return ``tokens`` as a fresh int32 copy."""
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (N, L), got shape {tokens.shape}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    out = np.array(tokens, dtype=np.int32)  # always a copy: the input is never modified
    if out.size and (out.min() < 0 or out.max() >= synonyms.vocab_size):
        raise ValueError(
            f"token ids must be in [0, {synonyms.vocab_size}) to index the synonym table, "
            f"got [{out.min()}, {out.max()}]"
        )
    return out


def _pick_synonyms(
    words: np.ndarray, rng: np.random.Generator, synonyms: SynonymTable
) -> np.ndarray:
    """Return one uniformly chosen synonym for each id in ``words`` (all must have one)."""
    counts = synonyms.counts[words]
    column = (rng.random(words.shape) * counts).astype(np.int64)
    # min() guards against a uniform draw times a count rounding up to the count.
    return np.asarray(synonyms.ids[words, np.minimum(column, counts - 1)])


def synonym(
    tokens: np.ndarray, strength: float, rng: np.random.Generator, synonyms: SynonymTable
) -> np.ndarray:
    """Replace each word, with probability ``strength``, by a random synonym of it.

    Words without synonyms are never replaced, so the expected fraction of *replaceable* words
    that change is ``strength``.

    Args:
        tokens: int32 ``(N, L)`` ids, PAD only at the end of each row.
        strength: Replacement probability per word, in [0, 1].
        rng: Source of randomness.
        synonyms: Synonym table covering every id in ``tokens``.

    Returns:
        A new int32 ``(N, L)`` array.

    """
    out = _check(tokens, strength, synonyms)
    if strength == 0.0:
        return out
    draw = rng.random(out.shape)
    replace = (out != PAD) & (synonyms.counts[out] > 0) & (draw < strength)
    out[replace] = _pick_synonyms(out[replace], rng, synonyms)
    return out


def insert(
    tokens: np.ndarray, strength: float, rng: np.random.Generator, synonyms: SynonymTable
) -> np.ndarray:
    """After each word, with probability ``strength``, insert a synonym of a word of the row.

    The inserted token is a random synonym of a word drawn uniformly among the row's words that
    have synonyms (EDA retries until it finds such a word; drawing among them directly is the
    same without the retries). A row with no such word gets no insertion. Rows grow and are
    then truncated to ``L``, so words near the end may be pushed out.

    Args:
        tokens: int32 ``(N, L)`` ids, PAD only at the end of each row.
        strength: Insertion probability per word, in [0, 1].
        rng: Source of randomness.
        synonyms: Synonym table covering every id in ``tokens``.

    Returns:
        A new int32 ``(N, L)`` array.

    """
    out = _check(tokens, strength, synonyms)
    if strength == 0.0:
        return out
    n, width = out.shape
    word = out != PAD
    seeds = word & (synonyms.counts[out] > 0)
    n_seeds = seeds.sum(axis=1)
    inserted = word & (rng.random(out.shape) < strength) & (n_seeds > 0)[:, None]
    # Positions of each row's synonym-bearing words come first in this stable order, so the
    # r-th of them is order[row, r]: a uniform draw among them with no loop over rows.
    order = np.argsort(~seeds, axis=1, kind="stable")
    rows, cols = np.nonzero(inserted)
    rank = (rng.random(rows.size) * n_seeds[rows]).astype(np.int64)
    source = out[rows, order[rows, np.minimum(rank, n_seeds[rows] - 1)]]
    new_words = _pick_synonyms(source, rng, synonyms)

    # Word j moves right by the insertions before it; its insertion goes right after it.
    after = np.cumsum(inserted, axis=1)
    shifted = np.arange(width)[None, :] + after - inserted
    grown = np.full((n, 2 * width), PAD, dtype=np.int32)
    grown[np.nonzero(word)[0], shifted[word]] = out[word]
    grown[rows, cols + after[rows, cols]] = new_words
    return grown[:, :width].copy()


def swap(
    tokens: np.ndarray, strength: float, rng: np.random.Generator, synonyms: SynonymTable
) -> np.ndarray:
    """Swap two random words of a row, ``round(strength * length)`` times.

    Each swap draws two distinct positions uniformly among the row's words (rows of one word
    are left as they are). ``round`` is numpy's, half to even. The words of a row stay the
    same multiset; at most ``2 * round(strength * length)`` positions change.

    Args:
        tokens: int32 ``(N, L)`` ids, PAD only at the end of each row.
        strength: Swaps per word of the row, in [0, 1].
        rng: Source of randomness.
        synonyms: Synonym table (unused; kept for the common transform signature).

    Returns:
        A new int32 ``(N, L)`` array.

    """
    out = _check(tokens, strength, synonyms)
    if strength == 0.0:
        return out
    lengths = (out != PAD).sum(axis=1)
    n_swaps = np.rint(strength * lengths).astype(np.int64)
    n_swaps[lengths < 2] = 0
    rows = np.arange(out.shape[0])
    # The loop runs over swap slots (at most L), each slot vectorised over the batch.
    for slot in range(int(n_swaps.max(initial=0))):
        active = rows[slot < n_swaps]
        length = lengths[active]
        # min() guards against a uniform draw times a length rounding up to the length.
        first = np.minimum((rng.random(active.size) * length).astype(np.int64), length - 1)
        # Adding 1..length-1 modulo length gives a second position, distinct and uniform.
        step = 1 + (rng.random(active.size) * (length - 1)).astype(np.int64)
        second = (first + np.minimum(step, length - 1)) % length
        out[active, first], out[active, second] = out[active, second], out[active, first]
    return out


def delete(
    tokens: np.ndarray, strength: float, rng: np.random.Generator, synonyms: SynonymTable
) -> np.ndarray:
    """Delete each word with probability ``strength``, closing the gaps.

    A row never becomes empty: if every word of a row is drawn for deletion, one of them,
    chosen uniformly, is kept. Surviving words keep their order; PAD fills the end.

    Args:
        tokens: int32 ``(N, L)`` ids, PAD only at the end of each row.
        strength: Deletion probability per word, in [0, 1].
        rng: Source of randomness.
        synonyms: Synonym table (unused; kept for the common transform signature).

    Returns:
        A new int32 ``(N, L)`` array.

    """
    out = _check(tokens, strength, synonyms)
    if strength == 0.0:
        return out
    word = out != PAD
    lengths = word.sum(axis=1)
    keep = word & (rng.random(out.shape) >= strength)
    emptied = np.nonzero((keep.sum(axis=1) == 0) & (lengths > 0))[0]
    survivor = (rng.random(emptied.size) * lengths[emptied]).astype(np.int64)
    keep[emptied, np.minimum(survivor, lengths[emptied] - 1)] = True
    # Kept word j lands at (number of kept words before it): an order-preserving compaction.
    target = np.cumsum(keep, axis=1) - 1
    compact = np.full_like(out, PAD)
    compact[np.nonzero(keep)[0], target[keep]] = out[keep]
    return compact


#: The text transforms, in the order the augmentation policy applies them (stream ids: see
#: TransformSpec.stream).
TEXT_SPECS = (
    TransformSpec(
        "synonym", "text", "probability per word of a synonym replacement", 0, 1, 10, synonym
    ),
    TransformSpec(
        "insert", "text", "probability per word of inserting a synonym", 0, 1, 11, insert
    ),
    TransformSpec(
        "swap", "text", "swaps per word (fraction of the sentence length)", 0, 1, 12, swap
    ),
    TransformSpec("delete", "text", "probability per word of deleting it", 0, 0.9, 13, delete),
)
#: The text transform functions by name.
TEXT_TRANSFORMS: dict[str, TextTransform] = {spec.name: spec.function for spec in TEXT_SPECS}
