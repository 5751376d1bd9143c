"""A quiet live progress line for a running sweep (rich), updated from Tune's callback hooks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.text import Text

from trainables import results


class LiveProgress(Callback):
    """Shows trials done/running/stopped early/failed, the best value so far and elapsed time."""

    def __init__(
        self,
        metric: str,
        mode: str,
        num_samples: int,
        console: Console | None = None,
        planned_epochs: Callable[[Mapping[str, Any]], int] | None = None,
    ):
        """Create the view.

        Args:
            metric: The sweep's metric (best so far is shown).
            mode: ``"min"`` or ``"max"``.
            num_samples: Trials the sweep will run.
            console: Where to draw (default: stderr).
            planned_epochs: A trial's planned epochs from its config; a trial that ends before
                them was stopped early (by the scheduler or by early stopping).

        """
        self.metric, self.mode, self.num_samples = metric, mode, num_samples
        self.console = console
        self.planned_epochs = planned_epochs
        self.best: float | None = None
        self.started = time.monotonic()
        self.ended: dict[str, int] = {"done": 0, "stopped_early": 0, "failed": 0}
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
            or result.get(results.DIVERGED)
        ):
            return
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best = float(value)

    def on_trial_complete(
        self, iteration: int, trials: list[Any], trial: Any, **info: Any
    ) -> None:
        """Count a finished trial (completed, stopped early, or failed without a retry)."""
        self.running.discard(trial.trial_id)
        last = trial.last_result or {}
        if last.get(results.FAILED):
            self.ended["failed"] += 1
            return
        self.ended["done"] += 1
        planned = self.planned_epochs(trial.config) if self.planned_epochs else None
        cut = planned is not None and int(last.get(results.EPOCH, planned)) < planned
        if last.get(results.EARLY_STOPPED) or (cut and not last.get(results.DIVERGED)):
            self.ended["stopped_early"] += 1

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
            f"trials {finished}/{self.num_samples} done ({self.ended['stopped_early']} stopped "
            f"early) · {len(self.running)} running · {self.ended['failed']} failed · "
            f"best {self.metric} {best} · "
            f"{elapsed:.0f}s elapsed{eta}"
        )
