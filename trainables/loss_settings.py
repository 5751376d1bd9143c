"""Loss and penalty hyperparameters, validated once for every framework.

The loss is chosen by the ``loss`` hyperparameter and defaults by task (``cross_entropy`` for
classification, ``mse`` for regression); ``huber_delta`` sets where Huber turns linear. The ``l1``
and ``l2`` penalties (``l1 * sum(|w|) + l2 * sum(w**2)`` over the weights, never the biases) are
added to the *training* objective only: they shape the weights, but reported losses stay
comparable across trials with different penalty strengths. Each framework implements the formulas
in its own module (:mod:`trainables.torch_losses`, :mod:`trainables.keras_losses`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainables.errors import HyperparameterError
from trainables.lr_schedules import number_hparam
from trainables.protocol import DataSpec

TASKS = ("classification", "regression")
CLASSIFICATION_LOSSES = ("cross_entropy", "binary_cross_entropy")
REGRESSION_LOSSES = ("mse", "mae", "huber")
DEFAULT_LOSSES = {"classification": "cross_entropy", "regression": "mse"}
DEFAULT_HUBER_DELTA = 1.0
#: Hyperparameter keys read by this module.
LOSS_HPARAMS: frozenset[str] = frozenset({"loss", "huber_delta", "l1", "l2"})


def check_task(data: DataSpec) -> None:
    """Raise ``ValueError`` unless ``data.task`` is one of :data:`TASKS`."""
    if data.task not in TASKS:
        raise ValueError(f"unknown task {data.task!r}; valid tasks: {', '.join(TASKS)}")


def loss_name(hparams: Mapping[str, Any], data: DataSpec) -> str:
    """Return the validated loss name for this trial.

    Args:
        hparams: Uses ``loss`` (default by task).
        data: Supplies the task and the number of classes.

    Returns:
        One of :data:`CLASSIFICATION_LOSSES` or :data:`REGRESSION_LOSSES`.

    Raises:
        ValueError: Unknown task or loss, a loss of the other task, or ``binary_cross_entropy``
            with other than two classes.

    """
    check_task(data)
    name = hparams.get("loss") or DEFAULT_LOSSES[data.task]
    valid = CLASSIFICATION_LOSSES if data.task == "classification" else REGRESSION_LOSSES
    if name not in valid:
        raise HyperparameterError(
            f"loss {name!r} does not fit a {data.task} task",
            fix=f"set loss to one of {', '.join(valid)}",
            key="loss",
        )
    if name == "binary_cross_entropy" and data.num_classes != 2:
        raise HyperparameterError(
            f"loss 'binary_cross_entropy' needs 2 classes, the data has {data.num_classes}",
            fix="use loss 'cross_entropy' for more than two classes",
            key="loss",
        )
    return str(name)


def is_binary(hparams: Mapping[str, Any], data: DataSpec) -> bool:
    """Return whether the model has a single logit (``loss: binary_cross_entropy``)."""
    return loss_name(hparams, data) == "binary_cross_entropy"


def penalty_strengths(hparams: Mapping[str, Any]) -> tuple[float, float]:
    """Return the validated ``(l1, l2)`` penalty strengths (both default 0).

    Raises:
        ValueError: If either is negative or not a finite number.

    """
    return (
        number_hparam(hparams, "l1", 0.0, lambda v: v >= 0, "a number >= 0"),
        number_hparam(hparams, "l2", 0.0, lambda v: v >= 0, "a number >= 0"),
    )


def huber_delta(hparams: Mapping[str, Any]) -> float:
    """Return the validated ``huber_delta`` (default 1.0): where Huber turns from square to line.

    Raises:
        HyperparameterError: If it is not a number > 0.

    """
    return number_hparam(
        hparams, "huber_delta", DEFAULT_HUBER_DELTA, lambda v: v > 0, "a number > 0"
    )
