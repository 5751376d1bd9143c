"""A user's own Keras model for the 8x8 digits, built from its hyperparameters.

tunepipe calls ``build(hp, spec)`` in every trial and trains the model in its Keras loop (a
compiled training step, torch's optimiser update rules), so the config's optimiser, schedule,
loss and early-stopping keys apply unchanged. The model returns logits: no softmax.
"""

from __future__ import annotations

from typing import Any

import keras


def build(hp: dict[str, Any], spec: Any) -> keras.Model:
    """Return a small CNN: ``filters`` and ``dropout`` are this model's own hyperparameters."""
    return keras.Sequential(
        [
            keras.Input(shape=spec.input_shape),
            # Images arrive channels first (C, H, W); Keras's CPU convolutions want them last.
            keras.layers.Permute((2, 3, 1)),
            keras.layers.Conv2D(int(hp.get("filters", 16)), 3, padding="same"),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dropout(float(hp.get("dropout", 0.0))),
            keras.layers.Dense(spec.num_outputs),
        ]
    )
