"""The trainable contract: what every framework implementation (torch, Keras, scikit-learn) offers.

Implementations sit side by side and satisfy this protocol structurally; there is no shared base
class across frameworks. The adapter (:mod:`trainables.adapter`) drives any implementation through
the same epoch loop, and :mod:`trainables.reporting` is the only module that talks to Ray.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: One mini-batch: ``{"x": features, "y": targets}`` as numpy arrays (extra keys are ignored).
Batch = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class DataSpec:
    """What a trainable needs to know about the data to build its model.

    Attributes:
        input_shape: Shape of one example: ``(1, 28, 28)`` for an image, ``(64,)`` for a vector.
        num_classes: Number of classes for classification; ``0`` for regression.
        task: ``"classification"`` or ``"regression"``.
        num_train: Rows in the training split.
        num_val: Rows in the validation split.
        target_std: Regression targets arrive standardised; multiply errors by this to report
            them in the target's own units (1.0 for classification).

    """

    input_shape: tuple[int, ...]
    num_classes: int
    task: str
    num_train: int
    num_val: int
    target_std: float = 1.0


@runtime_checkable
class TrialTrainable(Protocol):
    """One trial's model: built from hyperparameters, trained and evaluated an epoch at a time."""

    def setup(self, hparams: Mapping[str, Any], data: DataSpec, device: str) -> None:
        """Build the model and optimiser from hyperparameters for ``device`` ("cpu" or "cuda")."""

    def train_epoch(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Train one pass over ``batches``; return training metrics such as ``train_loss``."""

    def evaluate(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Evaluate without updating weights; return validation metrics such as ``val_loss``."""

    def save(self, directory: Path) -> None:
        """Write everything needed to resume training (model, optimiser) into ``directory``."""

    def load(self, directory: Path) -> None:
        """Restore the state written by :meth:`save` (after :meth:`setup`)."""


def require_rows(count: int, where: str) -> None:
    """Raise ``ValueError`` when an epoch saw no rows.

    An empty split would otherwise surface as a ZeroDivisionError far from its cause.
    """
    if count == 0:
        raise ValueError(f"{where} received no rows")
