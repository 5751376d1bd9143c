"""A user's own torch model: a small CNN for the 8x8 digits, built from its hyperparameters.

tunepipe calls ``build(hp, spec)`` in every trial and trains the module in its own epoch loop,
so the optimiser, schedule, loss and early-stopping keys of the config apply unchanged.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def build(hp: dict[str, Any], spec: Any) -> nn.Module:
    """Return the CNN: ``filters`` and ``dropout`` are this model's own hyperparameters."""
    channels = spec.input_shape[0]
    filters = int(hp.get("filters", 16))
    return nn.Sequential(
        nn.Conv2d(channels, filters, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(float(hp.get("dropout", 0.0))),
        nn.LazyLinear(spec.num_outputs),
    )
