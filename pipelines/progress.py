"""A quiet live progress line for a running sweep (rich), updated from Tune's callback hooks."""

from __future__ import annotations

import math
import time
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.text import Text


class LiveProgress(Callback):
    """Shows trials done/running/stopped early/failed, the best value so far and elapsed time."""

    def __init__(self, metric: str, mode: str, num_samples: int, console: Console | None = None):
        self.metric, self.mode, self.num_samples = metric, mode, num_samples
        self.console = console
        self.best: float | None = None
        self.started = time.monotonic()
        self.ended: dict[str, int] = {"done": 0, "failed": 0}
        self.running: set[str] = set()
        self._live: Live | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with its experiment state; consoles and live views do not pickle.
        return {**self.__dict__, "console": None, "_live": None}

    def setup(
        self,
        stop: Any = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        """Start the live display when the experiment starts."""
        self.started = time.monotonic()
        console = self.console or Console(stderr=True)
        self._live = Live(self._render(), console=console, refresh_per_second=2)
        self._live.start()

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Count a trial as running."""
        self.running.add(trial.trial_id)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        """Track the best finite value of the metric seen so far."""
        value = result.get(self.metric)
        if (
            not isinstance(value, int | float)
            or not math.isfinite(value)
            or result.get("diverged")
        ):
            return
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best = float(value)

    def on_trial_complete(
        self, iteration: int, trials: list[Any], trial: Any, **info: Any
    ) -> None:
        """Count a finished trial (completed or stopped early)."""
        self.running.discard(trial.trial_id)
        self.ended["done"] += 1

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Count a failed trial."""
        self.running.discard(trial.trial_id)
        self.ended["failed"] += 1

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        """Refresh the line (rich throttles the actual redraws)."""
        if self._live is not None:
            self._live.update(self._render())

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Draw the final state and stop the live display."""
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None

    def _render(self) -> Text:
        elapsed = time.monotonic() - self.started
        finished = self.ended["done"] + self.ended["failed"]
        eta = ""
        if 0 < finished < self.num_samples:
            eta = f" · ~{elapsed / finished * (self.num_samples - finished):.0f}s left"
        best = f"{self.best:.4f}" if self.best is not None else "-"
        return Text(
            f"trials {finished}/{self.num_samples} done · {len(self.running)} running · "
            f"{self.ended['failed']} failed · best {self.metric} {best} · "
            f"{elapsed:.0f}s elapsed{eta}"
        )
