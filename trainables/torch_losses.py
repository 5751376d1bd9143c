"""Training losses and weight penalties for the torch trainable.

The keys and their validation live in :mod:`trainables.loss_settings`, shared with Keras.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from trainables.loss_settings import (
    LOSS_HPARAMS,
    check_task,
    huber_delta,
    is_binary,
    loss_name,
    penalty_strengths,
)
from trainables.protocol import DataSpec

__all__ = [
    "LOSS_HPARAMS",
    "LossFn",
    "build_loss",
    "check_task",
    "is_binary",
    "loss_name",
    "penalty_strengths",
    "predicted_classes",
    "weight_penalty",
]

#: ``(outputs, targets) -> mean loss over the batch`` (a 0-dim tensor).
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
        delta = huber_delta(hparams)
        return partial(_regression, partial(nn.functional.huber_loss, delta=delta))
    elementwise = {"mse": nn.functional.mse_loss, "mae": nn.functional.l1_loss}
    return partial(_regression, elementwise[name])


def predicted_classes(outputs: torch.Tensor) -> torch.Tensor:
    """Return class indices: ``logit > 0`` for a one-logit (binary) model, else the argmax."""
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0).long()
    return outputs.argmax(dim=1)


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
