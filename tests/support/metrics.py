"""A user's own metric function, as ``metric: tests.support.metrics:kappa`` names it."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import cohen_kappa_score


def kappa(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Cohen's kappa of the predicted classes (the argmax of the class probabilities)."""
    return float(cohen_kappa_score(y_true, np.asarray(scores).argmax(axis=1)))
