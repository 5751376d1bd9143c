"""The step between augmentation and the model: raw rows in, model inputs out.

Text and audio are augmented in their raw form (token ids, waveforms) and only then turned into
what the model reads (hashed n-gram counts, standardised log spectrograms). Images and tables
are already model inputs. The validation split is featurised once, during preprocessing; the
training split is featurised per batch, after that epoch's augmentation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

KINDS = ("none", "hashed_ngrams", "log_spectrogram")


@dataclass(frozen=True)
class Featurizer:
    """A deterministic batch function from augmented rows to model inputs.

    Attributes:
        kind: ``"none"``, ``"hashed_ngrams"`` (text) or ``"log_spectrogram"`` (audio).
        buckets: Hash buckets of the n-gram counts.
        mean: Mean of the training split's features (subtracted).
        std: Standard deviation of the training split's features (divided by).

    """

    kind: str = "none"
    buckets: int = 2048
    mean: float = 0.0
    std: float = 1.0

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Return the features before standardisation (used to measure mean and std)."""
        if self.kind == "hashed_ngrams":
            from pipelines.data.text import hashed_ngram_features

            return hashed_ngram_features(x, self.buckets)
        if self.kind == "log_spectrogram":
            from pipelines.data.audio import log_spectrogram

            return log_spectrogram(x)
        return x

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Return the model inputs for a batch of raw rows."""
        if self.kind == "none":
            return x
        features = self.raw(x)
        if self.mean == 0.0 and self.std == 1.0:
            return features
        standardised: np.ndarray = (features - np.float32(self.mean)) / np.float32(self.std)
        return standardised.astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as JSON-able data (stored beside the preprocessing cache)."""
        return asdict(self)
