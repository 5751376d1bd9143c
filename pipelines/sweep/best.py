"""Reading a finished sweep's Tune results: the best trial, the top trials, how trials ended."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.tracking.schema import END_REASONS
from trainables import results


@dataclass(frozen=True)
class BestTrial:
    """The best trial of a sweep, at its best epoch.

    ``checkpoint`` is Ray's ``Checkpoint`` of that epoch (else the trial's latest): it may live
    in object storage, so it is read through :meth:`local_checkpoint`, never as a local path.
    """

    trial_id: str
    config: dict[str, Any]
    value: float
    epoch: int
    checkpoint: Any = None

    @property
    def checkpoint_location(self) -> str | None:
        """Where the checkpoint is, as a path or URI (for people to read)."""
        if self.checkpoint is None:
            return None
        filesystem = getattr(self.checkpoint, "filesystem", None)
        scheme = getattr(filesystem, "type_name", "local")
        path = str(self.checkpoint.path)
        return path if scheme == "local" else f"{scheme}://{path}"

    @contextmanager
    def local_checkpoint(self) -> Iterator[Path | None]:
        """Yield the checkpoint as a local folder (downloaded if remote), or None if none."""
        if self.checkpoint is None:
            yield None
            return
        with self.checkpoint.as_directory() as folder:
            yield Path(folder)


def is_better(value: float, than: float | None, mode: str) -> bool:
    """Return whether ``value`` beats ``than`` in direction ``mode`` (anything beats None)."""
    return than is None or (value > than if mode == "max" else value < than)


def best_of_trial(result: Any, metric: str, mode: str) -> tuple[float, int] | None:
    """Return ``(best finite value, epoch)`` of one trial, or None if it has none.

    A trial that diverged or errored is never a candidate: its numbers cannot be trusted.
    """
    frame = result.metrics_dataframe
    if result.error is not None or frame is None or metric not in frame:
        return None
    for flag in (results.DIVERGED, results.FAILED):
        if flag in frame and frame[flag].fillna(0).max() > 0:
            return None
    best: tuple[float, int] | None = None
    for value, epoch in zip(frame[metric], frame[results.EPOCH], strict=True):
        finite = isinstance(value, int | float) and math.isfinite(value)
        if finite and is_better(float(value), best[0] if best else None, mode):
            best = (float(value), int(epoch))
    return best


def select_best(
    grid: Any, metric: str, mode: str, resolve: Callable[[Mapping[str, Any]], dict[str, Any]]
) -> BestTrial | None:
    """Return the trial whose best epoch is best across the sweep (ties: first trial).

    ``resolve`` turns Tune's trial config into the trial's active hyperparameters.
    """
    winner: BestTrial | None = None
    for result in grid:
        found = best_of_trial(result, metric, mode)
        if found is None or not is_better(found[0], winner.value if winner else None, mode):
            continue
        winner = BestTrial(
            trial_id=str(result.metrics.get("trial_id", result.path)),
            config=resolve(result.config),
            value=found[0],
            epoch=found[1],
            checkpoint=_checkpoint_at(result, found[1]),
        )
    return winner


@dataclass(frozen=True)
class RankedTrial:
    """One of a sweep's top trials, as the summary table shows it.

    Attributes:
        trial_id: Tune's trial id.
        value: Its best value of the sweep metric.
        epochs: Epochs it reported.
        config: Its hyperparameters (Tune's trial config).

    """

    trial_id: str
    value: float
    epochs: int
    config: dict[str, Any]


def top_trials(grid: Any, metric: str, mode: str, k: int) -> tuple[RankedTrial, ...]:
    """Return the ``k`` best trials, best first; diverged and failed trials are left out."""
    scored = []
    for result in grid:
        found = best_of_trial(result, metric, mode)
        if found is not None:
            frame = result.metrics_dataframe
            trial_id = str(result.metrics.get("trial_id", ""))
            scored.append(RankedTrial(trial_id, found[0], len(frame), dict(result.config)))
    scored.sort(key=lambda trial: trial.value, reverse=(mode == "max"))
    return tuple(scored[:k])


def _checkpoint_at(result: Any, epoch: int) -> Any:
    """Return the kept checkpoint of ``epoch``, else the trial's latest checkpoint (or None)."""
    for checkpoint, metrics in result.best_checkpoints or []:
        if int(metrics.get("epoch", -1)) == epoch:
            return checkpoint
    return result.checkpoint


def count_end_reasons(grid: Any, reasons: dict[str, str]) -> dict[str, int]:
    """Count trials per end reason, using what the tracking callback recorded."""
    counts = Counter({reason: 0 for reason in END_REASONS})
    for result in grid:
        trial_id = str(result.metrics.get("trial_id", ""))
        reason = reasons.get(trial_id) or ("failed" if result.error is not None else "completed")
        counts[reason] += 1
    return dict(counts)
