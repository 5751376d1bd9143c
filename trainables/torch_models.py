"""PyTorch model builders for the torch trainable.

Each builder turns the flat hyperparameter mapping of one trial plus the :class:`DataSpec` into an
``nn.Module``. Keys that belong to other components (batch size, augmentation, ...) are ignored
here because the config layer already validated them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from trainables.protocol import DataSpec
from trainables.torch_losses import check_task, is_binary

DEFAULT_DROPOUT = 0.0
DEFAULT_HIDDEN_LAYERS = 2
DEFAULT_HIDDEN_UNITS = 128
DEFAULT_CHANNELS = 16
#: Width of the CNN's fully connected layer; fixed by design, not a hyperparameter.
CNN_DENSE_UNITS = 128
#: Hyperparameter keys read by this module.
MODEL_HPARAMS: frozenset[str] = frozenset(
    {"model", "hidden_layers", "hidden_units", "channels", "dropout"}
)


def output_size(data: DataSpec, hparams: Mapping[str, Any] | None = None) -> int:
    """Return the number of model outputs the task and loss need.

    Args:
        data: Description of the dataset.
        hparams: Uses ``loss``: ``binary_cross_entropy`` needs a single logit.

    Returns:
        ``num_classes`` for classification (one logit per class) or 1 for a binary loss; ``1``
        for regression.

    Raises:
        ValueError: If the task is unknown, a classification task has fewer than two classes,
            or the loss does not fit the task.

    """
    check_task(data)
    if data.task == "regression":
        return 1
    if data.num_classes < 2:
        raise ValueError(f"classification needs num_classes >= 2, got {data.num_classes}")
    return 1 if is_binary(hparams or {}, data) else data.num_classes


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


def _dropout_rate(hparams: Mapping[str, Any]) -> float:
    rate = float(hparams.get("dropout", DEFAULT_DROPOUT))
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {rate}")
    return rate


def _positive_int(hparams: Mapping[str, Any], key: str, default: int, minimum: int = 1) -> int:
    value = int(hparams.get(key, default))
    if value < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {value}")
    return value


def build_mlp(hparams: Mapping[str, Any], data: DataSpec) -> nn.Sequential:
    """Build a multilayer perceptron over the flattened input.

    Every hidden block is ``Linear -> ReLU -> Dropout``; the dropout module is present even at
    rate 0 so the ``state_dict`` keys do not depend on the dropout hyperparameter.

    Args:
        hparams: Uses ``hidden_layers``, ``hidden_units``, ``dropout`` and ``loss``.
        data: Supplies the input shape (any rank) and the output size.

    Returns:
        The model; it accepts ``(n, *input_shape)`` and returns ``(n, outputs)``.

    """
    hidden_layers = _positive_int(hparams, "hidden_layers", DEFAULT_HIDDEN_LAYERS, minimum=0)
    hidden_units = _positive_int(hparams, "hidden_units", DEFAULT_HIDDEN_UNITS)
    dropout = _dropout_rate(hparams)

    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(data.input_shape)
    for _ in range(hidden_layers):
        layers += [nn.Linear(width, hidden_units), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden_units
    layers.append(nn.Linear(width, output_size(data, hparams)))
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


def build_cnn(hparams: Mapping[str, Any], data: DataSpec) -> nn.Sequential:
    """Build a two-block convolutional network for ``(C, H, W)`` images.

    Layout: ``conv(c) -> ReLU -> maxpool2 -> conv(2c) -> ReLU -> maxpool2 -> flatten -> dropout
    -> linear(128) -> ReLU -> dropout -> linear(outputs)`` with padded 3x3 convolutions.

    Args:
        hparams: Uses ``channels``, ``dropout`` and ``loss``.
        data: Supplies the ``(C, H, W)`` input shape and the output size.

    Returns:
        The model; it accepts ``(n, C, H, W)`` and returns ``(n, outputs)``.

    Raises:
        ValueError: If the input shape is not ``(C, H, W)`` or is too small for two poolings.

    """
    if len(data.input_shape) != 3:
        raise ValueError(
            f"the cnn needs an image input_shape (C, H, W), got {tuple(data.input_shape)}"
        )
    channels = _positive_int(hparams, "channels", DEFAULT_CHANNELS)
    dropout = _dropout_rate(hparams)
    in_channels = data.input_shape[0]

    features = nn.Sequential(
        nn.Conv2d(in_channels, channels, kernel_size=3, padding=1),
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
        nn.Dropout(dropout),
        nn.Linear(flat, CNN_DENSE_UNITS),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(CNN_DENSE_UNITS, output_size(data, hparams)),
    )


MODEL_BUILDERS: dict[str, Callable[[Mapping[str, Any], DataSpec], nn.Module]] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
}


def build_torch_model(hparams: Mapping[str, Any], data: DataSpec) -> nn.Module:
    """Build the model named by ``hparams["model"]``.

    Args:
        hparams: Flat trial hyperparameters; ``model`` is required, unknown keys are ignored.
        data: Description of the dataset (input shape, task, number of classes).

    Returns:
        A freshly initialised module on the CPU.

    Raises:
        ValueError: If ``model`` is missing or unknown, or a hyperparameter is out of range.

    """
    name = hparams.get("model")
    builder = MODEL_BUILDERS.get(name) if isinstance(name, str) else None
    if builder is None:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_BUILDERS)}")
    return builder(hparams, data)
