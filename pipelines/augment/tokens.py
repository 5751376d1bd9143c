"""The token rows text augmentations rewrite: the padding id and the synonym table.

They belong to augmentation, which consumes them; :mod:`pipelines.data.text` builds both from
the corpus (and re-exports them), so the data package depends on augmentation and never the
other way round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Token id of padding at the end of a row (rows are fixed-width).
PAD = 0


@dataclass(frozen=True)
class SynonymTable:
    """Synonyms of every token id, as dense arrays the vectorised augmentations index into.

    Attributes:
        ids: int32 ``(V, K)``; row ``t`` holds the synonym ids of token ``t`` first, then -1.
        counts: int32 ``(V,)``; how many entries of ``ids[t]`` are synonyms (0 = none).

    """

    ids: np.ndarray
    counts: np.ndarray

    def __post_init__(self) -> None:
        if self.ids.ndim != 2 or self.counts.shape != (self.ids.shape[0],):
            raise ValueError(
                f"SynonymTable needs ids (V, K) and counts (V,), got {self.ids.shape} "
                f"and {self.counts.shape}"
            )

    @property
    def vocab_size(self) -> int:
        """Number of token ids the table covers."""
        return int(self.ids.shape[0])

    @classmethod
    def empty(cls, vocab_size: int) -> SynonymTable:
        """Return a table in which no token has a synonym (synonym augmentations are no-ops).

        Args:
            vocab_size: Number of token ids to cover.

        Returns:
            A table with ``counts`` all zero and one column of -1 in ``ids``.

        """
        # One padding column rather than none, so that (V, K) indexing code needs no K=0 case.
        return cls(
            ids=np.full((vocab_size, 1), -1, dtype=np.int32),
            counts=np.zeros(vocab_size, dtype=np.int32),
        )
