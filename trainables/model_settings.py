"""Model-capacity hyperparameters, validated once for every framework.

The torch and Keras trainables build the same two architectures from the same keys:

* ``mlp``: ``hidden_layers`` [2] blocks of ``Dense(hidden_units [128]) -> ReLU -> Dropout``
  over the flattened input, then the output layer;
* ``cnn``: ``conv(channels [16]) -> ReLU -> maxpool2 -> conv(2 * channels) -> ReLU ->
  maxpool2 -> flatten -> dropout -> dense(128) -> ReLU -> dropout -> output``, padded 3x3
  convolutions, for ``(C, H, W)`` images.

``dropout`` [0] is the drop probability, active in training only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainables.errors import HyperparameterError
from trainables.loss_settings import check_task, is_binary
from trainables.protocol import BuildSpec, DataSpec

MODELS = ("mlp", "cnn")
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


@dataclass(frozen=True)
class ModelSettings:
    """The validated architecture of one trial's model.

    Attributes:
        name: ``"mlp"`` or ``"cnn"``.
        hidden_layers: MLP hidden blocks (0 makes it a linear model).
        hidden_units: MLP width.
        channels: Channels of the CNN's first convolution (the second has twice as many).
        dropout: Drop probability in training.
        outputs: Size of the output layer (see :func:`output_size`).

    """

    name: str
    hidden_layers: int
    hidden_units: int
    channels: int
    dropout: float
    outputs: int


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


def _dropout_rate(hparams: Mapping[str, Any]) -> float:
    rate = float(hparams.get("dropout", DEFAULT_DROPOUT))
    if not 0.0 <= rate < 1.0:
        raise HyperparameterError(
            f"dropout must be in [0, 1), got {rate}", key="dropout", fix="use a rate below 1"
        )
    return rate


def _positive_int(hparams: Mapping[str, Any], key: str, default: int, minimum: int = 1) -> int:
    value = int(hparams.get(key, default))
    if value < minimum:
        raise HyperparameterError(
            f"{key} must be >= {minimum}, got {value}", key=key, fix=f"use {minimum} or more"
        )
    return value


def model_settings(hparams: Mapping[str, Any], data: DataSpec) -> ModelSettings:
    """Validate the model keys of ``hparams`` against the data.

    Raises:
        HyperparameterError: Unknown or missing ``model``, a value out of range, or a CNN on
            data that is not an image ``(C, H, W)``.

    """
    name = hparams.get("model")
    if name not in MODELS:
        raise HyperparameterError(
            f"unknown model {name!r}", key="model", fix=f"use one of: {', '.join(MODELS)}"
        )
    if name == "cnn" and len(data.input_shape) != 3:
        raise HyperparameterError(
            f"the cnn needs an image input_shape (C, H, W), got {tuple(data.input_shape)}",
            key="model",
            fix="use model: mlp for data that is not images",
        )
    return ModelSettings(
        name=str(name),
        hidden_layers=_positive_int(hparams, "hidden_layers", DEFAULT_HIDDEN_LAYERS, minimum=0),
        hidden_units=_positive_int(hparams, "hidden_units", DEFAULT_HIDDEN_UNITS),
        channels=_positive_int(hparams, "channels", DEFAULT_CHANNELS),
        dropout=_dropout_rate(hparams),
        outputs=output_size(data, hparams),
    )


def build_spec(data: DataSpec, hparams: Mapping[str, Any]) -> BuildSpec:
    """Return what a user's model builder is told about the data for these hyperparameters."""
    return BuildSpec(
        input_shape=tuple(data.input_shape),
        num_outputs=output_size(data, hparams),
        num_classes=data.num_classes,
        task=data.task,
        modality=data.modality,
    )
