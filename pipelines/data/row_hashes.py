"""Stable hashes of rows that decide which split a row is in, wherever and whenever it is read.

Two independent 64-bit hashes per row: the **holdout** hash (BLAKE2b of the row's bytes, the same
rule in memory and streamed, so a row keeps its side however the dataset around it changes) and,
for streamed texts and images, a **split** hash (BLAKE2b keyed with :data:`SPLIT_KEY`) that
assigns the remaining rows to training or validation. Keying makes the two independent: rows
with a low holdout hash are not also the ones with a low split hash.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

#: The key of the split hash (any fixed bytes, different from the holdout hash's none).
SPLIT_KEY = b"tunepipe.split"


def digest64(data: bytes, key: bytes = b"") -> int:
    """Return the first 8 bytes of BLAKE2b of ``data`` (keyed with ``key``) as an integer."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=key).digest(), "big")


def holdout_rows(x: Any, fraction: float) -> np.ndarray:
    """Return a mask of the rows in the holdout: a hash of each row's features, not a draw.

    A row keeps its side however the dataset around it grows, shrinks or is relabelled, so a
    champion trained on last month's data has never seen a row of this month's holdout. Texts
    are hashed as UTF-8, arrays as their bytes.
    """
    if fraction <= 0:
        return np.zeros(len(x), dtype=bool)
    hashes = np.asarray([digest64(_row_bytes(row)) for row in x], dtype=np.uint64)
    return in_holdout(hashes, fraction)


def in_holdout(hashes: np.ndarray, fraction: float) -> np.ndarray:
    """Return which rows of holdout ``hashes`` fall in the holdout of ``fraction`` (< 0.5)."""
    if fraction <= 0:
        return np.zeros(len(hashes), dtype=bool)
    mask: np.ndarray = hashes < np.uint64(int(fraction * 2**64))
    return mask


def _row_bytes(row: Any) -> bytes:
    return row.encode("utf-8") if isinstance(row, str) else np.ascontiguousarray(row).tobytes()
