"""Keras builders for the MLP and CNN of :mod:`trainables.model_settings`.

The same keys build the same layer stack as :mod:`trainables.torch_models`. Inputs arrive as in
torch, images channels-first ``(C, H, W)``; the CNN permutes them to channels-last first because
TensorFlow's CPU convolutions only run channels-last.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainables.keras_runtime import keras
from trainables.model_settings import CNN_DENSE_UNITS, ModelSettings, model_settings
from trainables.protocol import DataSpec


def _mlp_layers(settings: ModelSettings) -> list[Any]:
    layers: list[Any] = [keras.layers.Flatten()]
    for _ in range(settings.hidden_layers):
        layers += [
            keras.layers.Dense(settings.hidden_units, activation="relu"),
            keras.layers.Dropout(settings.dropout),
        ]
    return [*layers, keras.layers.Dense(settings.outputs)]


def _cnn_layers(settings: ModelSettings) -> list[Any]:
    channels = settings.channels
    return [
        keras.layers.Permute((2, 3, 1)),  # (C, H, W) -> (H, W, C)
        keras.layers.Conv2D(channels, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(2 * channels, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dropout(settings.dropout),
        keras.layers.Dense(CNN_DENSE_UNITS, activation="relu"),
        keras.layers.Dropout(settings.dropout),
        keras.layers.Dense(settings.outputs),
    ]


def build_keras_model(hparams: Mapping[str, Any], data: DataSpec) -> Any:
    """Build the model named by ``hparams["model"]``.

    Args:
        hparams: Flat trial hyperparameters; ``model`` is required, unknown keys are ignored.
        data: Description of the dataset (input shape, task, number of classes).

    Returns:
        A built ``keras.Sequential``; it accepts ``(n, *input_shape)`` and returns
        ``(n, outputs)`` logits or values.

    Raises:
        ValueError: If ``model`` is missing or unknown, a hyperparameter is out of range, or
            the image is too small for the CNN's two poolings.

    """
    settings = model_settings(hparams, data)
    if settings.name == "cnn" and min(data.input_shape[1:]) < 4:
        raise ValueError(f"input_shape {tuple(data.input_shape)} is too small for the cnn")
    layers = _cnn_layers(settings) if settings.name == "cnn" else _mlp_layers(settings)
    return keras.Sequential(
        [keras.Input(shape=tuple(data.input_shape)), *layers], name=settings.name
    )


def split_weights(model: Any) -> tuple[list[Any], list[Any]]:
    """Split trainable variables into weights (rank > 1: kernels) and the rest (biases).

    Regularisation (``l1``, ``l2``, ``weight_decay``) acts on the weights only, as in torch.
    """
    variables = list(model.trainable_variables)
    weights = [v for v in variables if len(v.shape) > 1]
    return weights, [v for v in variables if len(v.shape) <= 1]
