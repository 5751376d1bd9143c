"""User-defined trainables as a user would write them, for the tests of ``trainable.target``.

One trainable class implementing the protocol (a nearest-centroid classifier in numpy, so it
needs no framework), one training function around it, and the examples' model builders.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

import numpy as np

from tests.support.configs import REPO

#: Folders of the examples (each is imported from its own folder, as the config beside it does).
EXAMPLES = REPO / "examples"


class NearestCentroid:
    """A trainable class: class means that move towards the data by ``rate`` each epoch."""

    #: Declared metrics: the sweep's metric is checked against these before it starts.
    metrics = ("train_loss", "val_loss", "val_accuracy")

    def setup(self, hparams: Mapping[str, Any], data: Any, device: str) -> None:
        """Start every centroid at zero."""
        self.rate = float(hparams.get("rate", 0.5))
        features = int(np.prod(data.input_shape))
        self.centroids = np.zeros((data.num_classes, features))

    def _scores(self, x: np.ndarray) -> np.ndarray:
        distances = ((x.reshape(len(x), 1, -1) - self.centroids[None]) ** 2).sum(axis=2)
        logits = -distances
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return scores

    def train_epoch(self, batches: Iterable[Mapping[str, np.ndarray]]) -> dict[str, float]:
        """Move each centroid towards its class's mean over the epoch."""
        xs, ys = _gather(batches)
        for label in range(len(self.centroids)):
            rows = xs[ys == label]
            if len(rows):
                target = rows.reshape(len(rows), -1).mean(axis=0)
                self.centroids[label] += self.rate * (target - self.centroids[label])
        return {"train_loss": _log_loss(self._scores(xs), ys)}

    def evaluate(self, batches: Iterable[Mapping[str, np.ndarray]]) -> dict[str, float]:
        """Return the validation loss and accuracy."""
        xs, ys = _gather(batches)
        scores = self._scores(xs)
        return {
            "val_loss": _log_loss(scores, ys),
            "val_accuracy": float((scores.argmax(axis=1) == ys).mean()),
        }

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Return class probabilities (what the metric library and the pyfunc model use)."""
        return self._scores(np.asarray(x))

    def save(self, directory: Path) -> None:
        """Write the centroids (numpy's format, no pickles)."""
        np.save(Path(directory) / "centroids.npy", self.centroids, allow_pickle=False)

    def load(self, directory: Path) -> None:
        """Read the centroids back."""
        self.centroids = np.load(Path(directory) / "centroids.npy", allow_pickle=False)


def _gather(batches: Iterable[Mapping[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    parts = list(batches)
    if not parts:
        raise ValueError("the epoch received no rows")
    x = np.concatenate([np.asarray(b["x"], dtype=np.float64) for b in parts])
    return x, np.concatenate([np.asarray(b["y"]) for b in parts])


def _log_loss(scores: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(scores[np.arange(len(y)), y], 1e-12, 1)).mean())


def train_centroids(hp: dict[str, Any], ctx: Any) -> None:
    """A training function around the same model: its own loop, reports and checkpoints."""
    x_train, y_train, x_val, y_val = ctx.arrays()
    model = NearestCentroid()
    model.setup(hp, ctx.spec, ctx.device)
    first = 1
    resumed = ctx.checkpoint()
    if resumed is not None:
        model.load(resumed)
        first = json.loads((resumed / "epoch.json").read_text())["epoch"] + 1
    for epoch in range(first, int(hp["epochs"]) + 1):
        model.train_epoch([{"x": x_train, "y": y_train}])
        folder = Path(mkdtemp())
        model.save(folder)
        (folder / "epoch.json").write_text(json.dumps({"epoch": epoch}))
        ctx.log_model(_Predictor(model.centroids))
        ctx.report(model.evaluate([{"x": x_val, "y": y_val}]), checkpoint=folder)


class _Predictor:
    """What the training function hands MLflow: predicts class labels from the rows."""

    def __init__(self, centroids: np.ndarray) -> None:
        self.centroids = centroids.copy()

    def predict(self, x: Any) -> np.ndarray:
        rows = np.asarray(x, dtype=np.float64).reshape(len(x), 1, -1)
        labels: np.ndarray = ((rows - self.centroids[None]) ** 2).sum(axis=2).argmin(axis=1)
        return labels
