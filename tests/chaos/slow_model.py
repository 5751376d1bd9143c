"""The chaos suite's model: a user's trainable class whose epochs take a set time.

Faults must land while trials run, whatever the machine's speed: each epoch waits
``epoch_seconds``, so a sweep is slow in wall time and cheap in CPU. The model itself is a
softmax regression in numpy (no framework to load), trained one gradient step per epoch, so its
metrics change from epoch to epoch and it checkpoints, resumes and registers like any other.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


class SlowSoftmax:
    """Softmax regression, one full-batch gradient step per epoch of ``epoch_seconds``."""

    metrics = ("train_loss", "val_loss", "val_accuracy")

    def setup(self, hparams: Mapping[str, Any], data: Any, device: str) -> None:
        """Start from zero weights."""
        self.lr = float(hparams.get("lr", 0.1))
        self.pause = float(hparams.get("epoch_seconds", 0.5))
        features = int(np.prod(data.input_shape))
        self.weights = np.zeros((features, data.num_classes))

    def scores(self, x: Any) -> np.ndarray:
        """Return class probabilities."""
        logits = np.asarray(x, dtype=np.float64).reshape(len(x), -1) @ self.weights
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return probabilities

    def train_epoch(self, batches: Iterable[Mapping[str, np.ndarray]]) -> dict[str, float]:
        """Take one gradient step, after the epoch's wait."""
        time.sleep(self.pause)
        x, y = _rows(batches)
        probabilities = self.scores(x)
        onehot = np.eye(self.weights.shape[1])[y]
        self.weights -= self.lr * x.reshape(len(x), -1).T @ (probabilities - onehot) / len(x)
        return {"train_loss": _loss(probabilities, y)}

    def evaluate(self, batches: Iterable[Mapping[str, np.ndarray]]) -> dict[str, float]:
        """Return the validation loss and accuracy."""
        x, y = _rows(batches)
        probabilities = self.scores(x)
        accuracy = float((probabilities.argmax(axis=1) == y).mean())
        return {"val_loss": _loss(probabilities, y), "val_accuracy": accuracy}

    def save(self, directory: Path) -> None:
        """Write the weights (no pickles)."""
        np.save(Path(directory) / "weights.npy", self.weights, allow_pickle=False)

    def load(self, directory: Path) -> None:
        """Read the weights back."""
        self.weights = np.load(Path(directory) / "weights.npy", allow_pickle=False)


def _rows(batches: Iterable[Mapping[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    parts = list(batches)
    x = np.concatenate([np.asarray(b["x"], dtype=np.float64) for b in parts])
    return x, np.concatenate([np.asarray(b["y"]) for b in parts]).astype(int)


def _loss(probabilities: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probabilities[np.arange(len(y)), y], 1e-12, 1)).mean())
