"""Small real datasets shared by the unit tests (scikit-learn ships them, nothing downloads)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_diabetes, load_digits


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as float32 images ``(n, 1, 8, 8)`` in [0, 1] and int64 labels."""
    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8), bunch.target.astype(
        np.int64
    )


def diabetes_standardised() -> tuple[np.ndarray, np.ndarray, float]:
    """Diabetes features and target, both standardised, plus the target's std.

    Standardised targets keep the tests fast: raw targets (25..346) need many more epochs.
    """
    bunch = load_diabetes()
    x = bunch.data.astype(np.float32)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    std = float(bunch.target.std())
    return x, ((bunch.target - bunch.target.mean()) / std).astype(np.float32), std
