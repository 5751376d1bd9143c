"""PyTorch model builders for the torch trainable.

The architectures and their keys are described, and validated, in
:mod:`trainables.model_settings`, shared with the Keras trainable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from trainables.model_settings import (
    CNN_DENSE_UNITS,
    MODEL_HPARAMS,
    ModelSettings,
    model_settings,
    output_size,
)
from trainables.protocol import DataSpec

__all__ = ["MODEL_HPARAMS", "build_torch_model", "output_size", "split_weights"]


def split_weights(
    params: Iterable[nn.Parameter],
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split trainable parameters into weights (dim > 1) and the rest (biases, norm scales).

    Regularisation (``l1``, ``l2``, ``weight_decay``) acts on the weights only: shrinking a bias
    does not simplify the function, it only shifts it.

    Returns:
        ``(weights, others)``; frozen parameters are in neither.

    """
    trainable = [p for p in params if p.requires_grad]
    return [p for p in trainable if p.dim() > 1], [p for p in trainable if p.dim() <= 1]


def _build_mlp(settings: ModelSettings, data: DataSpec) -> nn.Sequential:
    # The dropout module is present even at rate 0 so the state_dict keys do not depend on it.
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(data.input_shape)
    for _ in range(settings.hidden_layers):
        layers += [
            nn.Linear(width, settings.hidden_units),
            nn.ReLU(),
            nn.Dropout(settings.dropout),
        ]
        width = settings.hidden_units
    layers.append(nn.Linear(width, settings.outputs))
    return nn.Sequential(*layers)


def _flattened_size(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    # A dummy forward pass is simpler and less error-prone than re-deriving the conv/pool
    # arithmetic, and it works for every image size (8x8 digits, 28x28 MNIST, ...).
    try:
        with torch.no_grad():
            out = features(torch.zeros(1, *input_shape))
    except RuntimeError as exc:
        raise ValueError(f"input_shape {input_shape} is too small for the cnn: {exc}") from exc
    return int(out.shape[1])


def _build_cnn(settings: ModelSettings, data: DataSpec) -> nn.Sequential:
    channels = settings.channels
    features = nn.Sequential(
        nn.Conv2d(data.input_shape[0], channels, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    flat = _flattened_size(features, tuple(data.input_shape))
    return nn.Sequential(
        *features,
        nn.Dropout(settings.dropout),
        nn.Linear(flat, CNN_DENSE_UNITS),
        nn.ReLU(),
        nn.Dropout(settings.dropout),
        nn.Linear(CNN_DENSE_UNITS, settings.outputs),
    )


_BUILDERS: dict[str, Callable[[ModelSettings, DataSpec], nn.Module]] = {
    "mlp": _build_mlp,
    "cnn": _build_cnn,
}


def build_torch_model(hparams: Mapping[str, Any], data: DataSpec) -> nn.Module:
    """Build the model named by ``hparams["model"]``.

    Args:
        hparams: Flat trial hyperparameters; ``model`` is required, unknown keys are ignored.
        data: Description of the dataset (input shape, task, number of classes).

    Returns:
        A freshly initialised module on the CPU; it accepts ``(n, *input_shape)`` and returns
        ``(n, outputs)``.

    Raises:
        ValueError: If ``model`` is missing or unknown, or a hyperparameter is out of range.

    """
    settings = model_settings(hparams, data)
    return _BUILDERS[settings.name](settings, data)
