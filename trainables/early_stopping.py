"""Early stopping on the monitored metric, shared by every framework's trainable.

A trainable calls :meth:`EarlyStopping.update` after each epoch and stops when
:attr:`EarlyStopping.should_stop` turns true, logging :meth:`EarlyStopping.reason`. The state is a
small JSON-serialisable dict so a trial resumed from a checkpoint keeps counting where it left off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainables.errors import HyperparameterError
from trainables.lr_schedules import number_hparam

EARLY_STOPPING_HPARAMS = frozenset(
    {"early_stopping_patience", "early_stopping_min_delta", "early_stopping_restore_best"}
)
_MODES = ("min", "max")


@dataclass
class EarlyStopping:
    """Counts epochs without improvement of one metric.

    Attributes:
        patience: Epochs without improvement before stopping (>= 1).
        mode: ``"min"`` when lower is better, ``"max"`` when higher is better.
        min_delta: An improvement must beat the best by more than this.
        best: Best value so far, None until a non-NaN value is seen.
        best_epoch: Epoch at which ``best`` was reached.
        wait: Epochs since the last improvement.
        restore_best: Whether the trainable should roll back to the best epoch's weights when it
            stops; kept here only so it travels with the other settings.

    """

    patience: int
    mode: str
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int = 0
    wait: int = 0
    restore_best: bool = False

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if self.mode not in _MODES:
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if not self.min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta}")

    def _improves(self, value: float) -> bool:
        # A NaN epoch (diverged training) must never become the best, or every later finite
        # value would compare False against it and the run could never improve again.
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float, epoch: int) -> bool:
        """Record the metric of ``epoch``; return True if it is the new best."""
        value = float(value)
        if self._improves(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        return False

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` epochs in a row brought no improvement."""
        return self.wait >= self.patience

    def reason(self, metric: str) -> str:
        """Explain the stop in one line, naming ``metric``, e.g. for the trial's log."""
        delta = f" by more than {self.min_delta:g}" if self.min_delta > 0 else ""
        epochs = "epoch" if self.wait == 1 else "epochs"
        if self.best is None:
            best = "no valid value yet"
        else:
            best = f"best {self.best:.4g} at epoch {self.best_epoch}"
        return f"no improvement of {metric}{delta} for {self.wait} {epochs} ({best})"

    def state_dict(self) -> dict[str, float | int | None]:
        """Return the counting state as a JSON-serialisable dict (for checkpoints)."""
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        best = state["best"]
        self.best = None if best is None else float(best)
        self.best_epoch = int(state["best_epoch"])
        self.wait = int(state["wait"])


def early_stopping_from_hparams(
    hparams: Mapping[str, Any], metric_mode: str
) -> EarlyStopping | None:
    """Build early stopping from the trial's hyperparameters.

    Args:
        hparams: Flat hyperparameters; reads the keys in :data:`EARLY_STOPPING_HPARAMS`.
        metric_mode: ``"min"`` or ``"max"``, the experiment's mode for the monitored metric.

    Returns:
        None when ``early_stopping_patience`` is absent, None or 0 (early stopping off).

    Raises:
        HyperparameterError: A value is out of range; the message names the key and echoes
            the value.
        ValueError: ``metric_mode`` is neither ``"min"`` nor ``"max"``.

    """
    if metric_mode not in _MODES:
        raise ValueError(f"metric_mode must be 'min' or 'max', got {metric_mode!r}")
    # Everything is validated before the "off" check so a bad value is reported even in a trial
    # that happens to have early stopping disabled.
    patience = int(
        number_hparam(
            hparams,
            "early_stopping_patience",
            0,
            lambda v: v >= 0,
            "an integer >= 0",
            integer=True,
        )
    )
    min_delta = number_hparam(
        hparams, "early_stopping_min_delta", 0.0, lambda v: v >= 0, "a number >= 0"
    )
    restore_best = hparams.get("early_stopping_restore_best", False)
    if restore_best is None:
        restore_best = False
    # 0/1 are accepted as well because YAML users and categorical samplers sometimes give ints.
    if not isinstance(restore_best, bool) and restore_best not in (0, 1):
        raise HyperparameterError(
            f"early_stopping_restore_best must be true or false, got {restore_best!r}",
            fix="set early_stopping_restore_best to true or false",
            key="early_stopping_restore_best",
        )
    if patience == 0:
        return None
    return EarlyStopping(
        patience=patience, mode=metric_mode, min_delta=min_delta, restore_best=bool(restore_best)
    )
