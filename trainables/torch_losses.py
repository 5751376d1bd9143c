"""Training losses and weight penalties for the torch trainable.

The loss is chosen by the ``loss`` hyperparameter and defaults by task (``cross_entropy`` for
classification, ``mse`` for regression). The ``l1`` and ``l2`` penalties are added to the
*training* objective only: they shape the weights, but reported losses stay comparable across
trials with different penalty strengths.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from pipelines.errors import ConfigError
from trainables.protocol import DataSpec
from trainables.schedules import number_hparam

TASKS = ("classification", "regression")
CLASSIFICATION_LOSSES = ("cross_entropy", "binary_cross_entropy")
REGRESSION_LOSSES = ("mse", "mae", "huber")
DEFAULT_LOSSES = {"classification": "cross_entropy", "regression": "mse"}
DEFAULT_HUBER_DELTA = 1.0
#: Hyperparameter keys read by this module.
LOSS_HPARAMS: frozenset[str] = frozenset({"loss", "huber_delta", "l1", "l2"})

#: ``(outputs, targets) -> mean loss over the batch`` (a 0-dim tensor).
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
        raise ConfigError(
            f"loss {name!r} does not fit a {data.task} task",
            fix=f"set loss to one of {', '.join(valid)}",
            key="loss",
        )
    if name == "binary_cross_entropy" and data.num_classes != 2:
        raise ConfigError(
            f"loss 'binary_cross_entropy' needs 2 classes, the data has {data.num_classes}",
            fix="use loss 'cross_entropy' for more than two classes",
            key="loss",
        )
    return str(name)


def is_binary(hparams: Mapping[str, Any], data: DataSpec) -> bool:
    """Return whether the model has a single logit (``loss: binary_cross_entropy``)."""
    return loss_name(hparams, data) == "binary_cross_entropy"


def _binary_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # Targets arrive as class indices (long) like every classification target; BCE wants floats.
    return nn.functional.binary_cross_entropy_with_logits(
        outputs.reshape(-1), targets.to(outputs.dtype)
    )


def _regression(loss: LossFn, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # The model emits (n, 1); broadcasting that against (n,) targets would compare every pair.
    return loss(outputs.reshape(-1), targets)


def build_loss(hparams: Mapping[str, Any], data: DataSpec) -> LossFn:
    """Build the training loss named by ``hparams["loss"]``.

    Args:
        hparams: Uses ``loss`` and, for ``huber``, ``huber_delta`` (default 1.0): the error size
            where the loss turns from quadratic to linear.
        data: Supplies the task and number of classes.

    Returns:
        A function ``(outputs, targets) -> mean loss`` over the batch.

    Raises:
        ValueError: See :func:`loss_name`; also a ``huber_delta`` that is not > 0.

    """
    name = loss_name(hparams, data)
    if name == "cross_entropy":
        return nn.functional.cross_entropy
    if name == "binary_cross_entropy":
        return _binary_cross_entropy
    if name == "huber":
        delta = number_hparam(
            hparams, "huber_delta", DEFAULT_HUBER_DELTA, lambda v: v > 0, "a number > 0"
        )
        return partial(_regression, partial(nn.functional.huber_loss, delta=delta))
    elementwise = {"mse": nn.functional.mse_loss, "mae": nn.functional.l1_loss}
    return partial(_regression, elementwise[name])


def predicted_classes(outputs: torch.Tensor) -> torch.Tensor:
    """Return class indices: ``logit > 0`` for a one-logit (binary) model, else the argmax."""
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0).long()
    return outputs.argmax(dim=1)


def penalty_strengths(hparams: Mapping[str, Any]) -> tuple[float, float]:
    """Return the validated ``(l1, l2)`` penalty strengths (both default 0).

    Raises:
        ValueError: If either is negative or not a finite number.

    """
    return (
        number_hparam(hparams, "l1", 0.0, lambda v: v >= 0, "a number >= 0"),
        number_hparam(hparams, "l2", 0.0, lambda v: v >= 0, "a number >= 0"),
    )


def weight_penalty(weights: Sequence[torch.Tensor], l1: float, l2: float) -> torch.Tensor | None:
    """Return ``l1 * sum(|w|) + l2 * sum(w**2)`` over ``weights``, or ``None`` when both are 0.

    ``None`` lets the training loop skip the work (and the autograd graph) for unpenalised
    trials, which are the common case.

    Args:
        weights: The penalised tensors (weight matrices and kernels, not biases).
        l1: Lasso strength; its constant-size pull drives unhelpful weights to exactly zero.
        l2: Ridge strength; its pull is proportional to the weight.

    """
    if not weights or (l1 == 0 and l2 == 0):
        return None
    terms = []
    if l1 > 0:
        terms.append(l1 * torch.stack([w.abs().sum() for w in weights]).sum())
    if l2 > 0:
        terms.append(l2 * torch.stack([w.square().sum() for w in weights]).sum())
    return torch.stack(terms).sum()
