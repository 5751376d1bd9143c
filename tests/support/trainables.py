"""The harness every trainable test shares: real data split once, batches, registry-built models.

One split rule for every test: a seed-0 permutation of the rows, the first fifth for validation,
the rest for training. Training batches are shuffled by a seed (one per epoch); validation
batches keep their order. Nothing here imports a framework: :func:`make` loads the implementation
class through :data:`trainables.registry.TRAINABLES`, as a trial does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tests.support.datasets import diabetes_standardised, digits_images
from trainables.protocol import DataSpec, TrialTrainable
from trainables.registry import TRAINABLES

#: Rows per training batch (the batch_size of the shipped digits configs).
BATCH_SIZE = 64
#: Rows per validation batch: evaluation does not depend on it, fewer calls are faster.
VAL_BATCH_SIZE = 256


def batches(
    x: np.ndarray,
    y: np.ndarray,
    seed: int | None = None,
    *,
    batch_size: int = BATCH_SIZE,
    flatten: bool = False,
) -> list[dict[str, np.ndarray]]:
    """Cut ``x`` and ``y`` into mini-batches as the adapter passes them.

    Args:
        x: Examples, one per row.
        y: Targets, one per row.
        seed: Shuffle the rows with this seed; None keeps their order.
        batch_size: Rows per batch (the last batch may be shorter).
        flatten: Reshape every example to a vector, as tabular storage hands it over.

    Returns:
        The batches, each ``{"x": ..., "y": ...}``.

    """
    order = np.arange(len(x)) if seed is None else np.random.default_rng(seed).permutation(len(x))
    if flatten:
        x = x.reshape(len(x), -1)
    return [
        {"x": x[order[i : i + batch_size]], "y": y[order[i : i + batch_size]]}
        for i in range(0, len(x), batch_size)
    ]


class Split:
    """A fixed train/validation split of real data plus the DataSpec a trainable is built from.

    Attributes:
        x_train: Training examples.
        y_train: Training targets.
        x_val: Validation examples.
        y_val: Validation targets.
        spec: The matching :class:`~trainables.protocol.DataSpec`.

    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        num_classes: int,
        task: str,
        target_std: float = 1.0,
    ) -> None:
        """Split ``x`` and ``y``: a seed-0 permutation, its first fifth for validation.

        Args:
            x: Examples, one per row; ``x.shape[1:]`` is the input shape.
            y: Targets, one per row.
            num_classes: Number of classes; 0 for regression.
            task: ``"classification"`` or ``"regression"``.
            target_std: Scale of standardised regression targets (errors are reported in
                target units); 1.0 keeps them standardised.

        """
        order = np.random.default_rng(0).permutation(len(x))
        val, train = order[: len(x) // 5], order[len(x) // 5 :]
        self.x_train, self.y_train = x[train], y[train]
        self.x_val, self.y_val = x[val], y[val]
        self.spec = DataSpec(
            input_shape=tuple(x.shape[1:]),
            num_classes=num_classes,
            task=task,
            num_train=len(train),
            num_val=len(val),
            target_std=target_std,
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return self.spec.input_shape

    def train(
        self, seed: int, *, flatten: bool = False, batch_size: int = BATCH_SIZE
    ) -> list[dict[str, np.ndarray]]:
        """Return one epoch of training batches, shuffled by ``seed``."""
        return batches(self.x_train, self.y_train, seed, batch_size=batch_size, flatten=flatten)

    def val(
        self, *, flatten: bool = False, batch_size: int = VAL_BATCH_SIZE
    ) -> list[dict[str, np.ndarray]]:
        """Return the validation batches, in order."""
        return batches(self.x_val, self.y_val, batch_size=batch_size, flatten=flatten)


def digits_split(shape: Sequence[int] | None = None) -> Split:
    """The 1,797 scikit-learn digits, ten classes, as ``(1, 8, 8)`` images in [0, 1].

    Args:
        shape: Another shape for each example, e.g. ``(64,)`` for vectors or ``(8, 8)``.

    """
    x, y = digits_images()
    if shape is not None:
        x = x.reshape(len(x), *shape)
    return Split(x, y, num_classes=10, task="classification")


def diabetes_split(*, target_units: bool = True) -> Split:
    """The 442 diabetes rows: standardised features and targets, a regression task.

    Args:
        target_units: Report errors in the target's own units (``target_std`` is the target's
            standard deviation); False keeps them standardised (``target_std`` 1.0).

    """
    x, y, std = diabetes_standardised()
    return Split(x, y, num_classes=0, task="regression", target_std=std if target_units else 1.0)


def make(
    framework: str, hparams: Mapping[str, Any], data: Split | DataSpec | Any, device: str = "cpu"
) -> Any:
    """Build a set-up trainable of ``framework`` through the registry, as a trial does.

    Args:
        framework: A key of :data:`~trainables.registry.TRAINABLES`, e.g. ``"torch"``.
        hparams: The trial's hyperparameters.
        data: A :class:`Split`, or the spec itself (a DataSpec or a stand-in with its fields).
        device: ``"cpu"`` or ``"cuda"``.

    Returns:
        The implementation instance after ``setup``.

    """
    trainable = TRAINABLES[framework].load_class()()
    trainable.setup(dict(hparams), data.spec if isinstance(data, Split) else data, device)
    return trainable


def fit(
    trainable: TrialTrainable, data: Split, epochs: int, *, first_seed: int = 0
) -> list[dict[str, float]]:
    """Train ``epochs`` epochs, evaluating after each.

    Args:
        trainable: A set-up trainable.
        data: The split to train on and evaluate against.
        epochs: Number of epochs.
        first_seed: Shuffle seed of the first epoch; epoch ``k`` uses ``first_seed + k``.

    Returns:
        The merged training and validation metrics of each epoch.

    """
    history = []
    for epoch in range(epochs):
        metrics = dict(trainable.train_epoch(data.train(first_seed + epoch)))
        metrics.update(trainable.evaluate(data.val()))
        history.append(metrics)
    return history
