"""A trivial trainable behind the pipeline's contract: no model, no data work, instant epochs.

Used by the overhead benchmark so that what is measured is orchestration alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class NoopTrainable:
    """Reports ``score = x * epoch`` without touching the batches it is given."""

    def setup(self, hparams: Mapping[str, Any], data: Any, device: str) -> None:
        self.x = float(hparams["x"])
        self.epoch = 0

    def train_epoch(self, batches: Iterable[Any]) -> dict[str, float]:
        self.epoch += 1
        return {"train_loss": 0.0}

    def evaluate(self, batches: Iterable[Any]) -> dict[str, float]:
        return {"score": self.x * self.epoch}

    def save(self, directory: Path) -> None:
        (directory / "state.json").write_text(json.dumps({"epoch": self.epoch}))

    def load(self, directory: Path) -> None:
        self.epoch = json.loads((directory / "state.json").read_text())["epoch"]
