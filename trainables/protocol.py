"""The trainable contract: what every framework implementation (torch, Keras, scikit-learn) offers.

Implementations sit side by side and satisfy this protocol structurally; there is no shared base
class across frameworks. The adapter (:mod:`trainables.adapter`) drives any implementation through
the same epoch loop, and :mod:`trainables.reporting` is the only module that talks to Ray.

The other direction is a protocol too: the adapter reads a trial's batches from a
:class:`BatchSource`, which the pipeline's data side implements (Ray Data, augmentation), so
nothing here imports the pipeline.

Two optional static methods of an implementation class tune how a trial runs it:
``set_cpu_threads(cpus)`` sizes the framework's thread pools to the trial's CPUs, and
``device_for(gpus) -> str`` picks the device for a trial given its GPU share (default ``"cpu"``).
An optional ``scores(x) -> array`` (class probabilities, or predictions for regression) lets
the metric library (:mod:`trainables.metrics`) compute F1, ROC AUC or R² on the validation split.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
        modality: ``"image"``, ``"tabular"``, ``"text"`` or ``"audio"``.

    """

    input_shape: tuple[int, ...]
    num_classes: int
    task: str
    num_train: int
    num_val: int
    target_std: float = 1.0
    modality: str = "tabular"


@dataclass(frozen=True)
class BuildSpec:
    """What a user's model builder is told about the data: ``build(hp, spec) -> model``.

    Attributes:
        input_shape: Shape of one example, as the model receives it (batch dimension first).
        num_outputs: Outputs the model must produce: one logit per class (one for a binary
            loss), or one value for regression.
        num_classes: Number of classes; 0 for regression.
        task: ``"classification"`` or ``"regression"``.
        modality: ``"image"``, ``"tabular"``, ``"text"`` or ``"audio"``.

    """

    input_shape: tuple[int, ...]
    num_outputs: int
    num_classes: int
    task: str
    modality: str


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


class TrialBatches(Protocol):
    """One trial's view of the sweep's data: fresh training batches per epoch, fixed validation."""

    def train_batches(self, epoch: int, batch_size: int) -> Iterable[Batch]:
        """Return one epoch of shuffled (and, if the trial asks, augmented) training batches."""

    def val_batches(self) -> Iterable[Batch]:
        """Return the validation split in order, never augmented."""

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(x_train, y_train, x_val, y_val)`` whole, in order, never augmented."""


class BatchSource(Protocol):
    """The sweep's data as the adapter sees it (``pipelines.data.SweepData`` implements it)."""

    @property
    def spec(self) -> DataSpec:
        """Shapes and task, for building models."""

    def for_trial(
        self,
        hparams: Mapping[str, Any],
        *,
        trial: int,
        cpus: int,
        device: str = "cpu",
        framework: str | None = None,
    ) -> TrialBatches:
        """Return the batches of one trial, set up from its hyperparameters.

        ``device`` is where the trial computes and ``framework`` the trainable that receives
        the batches ("torch" for the bundled torch trainable, which takes batches augmented on
        its GPU as tensors; None for code that wants numpy).

        Raises:
            UserInputError: For a data hyperparameter the trial cannot use (an augmentation
                strength out of range, say); the trial then fails without a retry.

        """


@dataclass(frozen=True)
class ExportedModel:
    """A trained model rebuilt from its checkpoint, ready to log in its MLflow flavour.

    Attributes:
        model: The framework's model object (torch module, Keras model, scikit-learn estimator).
        options: Extra keyword arguments for the flavour's ``log_model`` (serialisation format).
        input_example: Rows logged as the model's input example, or None.
        signature_data: ``(inputs, outputs)`` the model signature is inferred from, when an input
            example cannot be logged (None: MLflow infers it from ``input_example``).

    """

    model: Any
    options: Mapping[str, Any] = field(default_factory=dict)
    input_example: np.ndarray | None = None
    signature_data: tuple[np.ndarray, np.ndarray] | None = None


def require_rows(count: int, where: str) -> None:
    """Raise ``ValueError`` when an epoch saw no rows.

    An empty split would otherwise surface as a ZeroDivisionError far from its cause.
    """
    if count == 0:
        raise ValueError(f"{where} received no rows")
