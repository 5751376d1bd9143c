"""A Tune callback that mirrors every trial as an MLflow child run of the sweep.

Runs on the driver. Metrics are buffered per trial and written with ``log_batch`` (one SQLite
write per flush instead of one per value). MLflow being unreachable never fails the sweep: the
buffer is kept and written on the next flush, and a warning is printed once.
"""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from pipelines.tracking.sweep_run import PARENT_TAG, log_params

logger = logging.getLogger(__name__)

#: Fields Tune adds to every result; they are bookkeeping, not the trial's metrics.
TUNE_BOOKKEEPING = frozenset(
    {
        "done",
        "training_iteration",
        "timestamp",
        "time_total_s",
        "pid",
        "hostname",
        "node_ip",
        "time_since_restore",
        "iterations_since_restore",
        "timesteps_total",
        "episodes_total",
        "timesteps_since_restore",
        "should_checkpoint",
        "date",
        "trial_id",
        "experiment_id",
        "experiment_tag",
        "checkpoint_dir_name",
        "config",
    }
)
FLUSH_EVERY_S = 2.0
#: Hyperparameters shown in a child run's name, when they are searched.
NAME_KEYS = ("optimizer", "lr", "batch_size", "dropout", "channels", "hidden_units")


def trial_number(trial: Any) -> int:
    """Return the sweep-wide trial number, which Tune puts at the start of the experiment tag."""
    digits = re.match(r"\d+", str(getattr(trial, "experiment_tag", "")))
    return int(digits.group()) if digits else 0


def run_name(trial: Any, searched: list[str]) -> str:
    """Name a child run so a person can tell trials apart: number plus key hyperparameters."""
    parts = [f"trial-{trial_number(trial):03d}"]
    for key in [k for k in NAME_KEYS if k in searched][:3]:
        value = trial.config.get(key)
        parts.append(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Return the trial's own numeric metrics from a Tune result."""
    return {
        key: float(value)
        for key, value in result.items()
        if key not in TUNE_BOOKKEEPING
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    }


class MlflowTrialCallback(Callback):
    """Creates a nested child run per trial and streams its per-epoch metrics.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment_id: Experiment holding the sweep.
        parent_run_id: The sweep's parent run.
        searched: Names of the searched hyperparameters (used in run names).
        max_epochs_key: Hyperparameter that holds the planned number of epochs.

    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        searched: list[str],
        max_epochs_key: str = "epochs",
    ) -> None:
        self.tracking_uri = tracking_uri
        self._client: MlflowClient | None = None
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.searched = searched
        self.max_epochs_key = max_epochs_key
        self.run_ids: dict[str, str] = {}
        self.end_reasons: dict[str, str] = {}
        self._pending: dict[str, list[Metric]] = {}
        self._last_flush = time.monotonic()
        self._warned = False

    @property
    def client(self) -> MlflowClient:
        """The MLflow client, created on first use (clients do not pickle)."""
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with its experiment state; the client is rebuilt on demand.
        return {**self.__dict__, "_client": None}

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Create the trial's child run the first time it starts (not again on retries)."""
        self._run_id(trial)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        """Buffer the result's metrics at step = training iteration; flush every few seconds."""
        run_id = self._run_id(trial)
        step = int(result.get("training_iteration", 0))
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, value, now, step)
            for key, value in numeric_metrics(result).items()
            # MLflow stores NaN fine, but +/-inf breaks its charts; the diverged tag says why.
            if math.isfinite(value) or math.isnan(value)
        ]
        self._pending.setdefault(run_id, []).extend(metrics)
        if time.monotonic() - self._last_flush >= FLUSH_EVERY_S:
            self.flush()

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Note a retried failure on the child run (it stays open and continues)."""
        self._safe(
            self.client.set_tag, self._run_id(trial), "tunepipe.last_retry_error", _error(trial)
        )

    def on_trial_complete(
        self, iteration: int, trials: list[Any], trial: Any, **info: Any
    ) -> None:
        """Close the child run: completed, stopped early by the scheduler, or diverged."""
        last = trial.last_result or {}
        epoch = int(last.get("epoch", 0))
        planned = int(trial.config.get(self.max_epochs_key, epoch))
        if last.get("diverged"):
            reason = "diverged"
            detail = f"{last.get('diverged_metric')} was not finite at epoch {epoch}"
            status = "FAILED"
        elif epoch < planned:
            reason, status = "stopped_early", "FINISHED"
            detail = f"stopped by the scheduler after epoch {epoch} of {planned}"
        else:
            reason, status = "completed", "FINISHED"
            detail = f"ran all {planned} epochs"
        self._close(trial, status, reason, detail)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Close the child run as failed, with a one-line error summary."""
        self._close(trial, "FAILED", "failed", _error(trial))

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Write whatever is still buffered."""
        self.flush()

    def flush(self) -> None:
        """Write buffered metrics; keep them for the next flush if MLflow is unreachable."""
        self._last_flush = time.monotonic()
        for run_id in list(self._pending):
            metrics = self._pending[run_id]
            for start in range(0, len(metrics), 1000):
                if not self._safe(
                    self.client.log_batch, run_id, metrics=metrics[start : start + 1000]
                ):
                    self._pending[run_id] = metrics[start:]
                    break
            else:
                del self._pending[run_id]

    def _close(self, trial: Any, status: str, reason: str, detail: str) -> None:
        run_id = self._run_id(trial)
        self.flush()
        self.end_reasons[trial.trial_id] = reason
        tags = [RunTag("tunepipe.end_reason", reason), RunTag("tunepipe.end_detail", detail)]
        self._safe(self.client.log_batch, run_id, tags=tags)
        self._safe(self.client.set_terminated, run_id, status=status)

    def _run_id(self, trial: Any) -> str:
        run_id = self.run_ids.get(trial.trial_id)
        if run_id is None:
            run = self.client.create_run(
                self.experiment_id,
                run_name=run_name(trial, self.searched),
                tags={
                    PARENT_TAG: self.parent_run_id,
                    "tunepipe.kind": "trial",
                    "tunepipe.trial_id": trial.trial_id,
                },
            )
            run_id = self.run_ids[trial.trial_id] = run.info.run_id
            log_params(self.client, run_id, dict(trial.config))
        return run_id

    def _safe(self, write: Any, *args: Any, **kwargs: Any) -> bool:
        try:
            write(*args, **kwargs)
        except Exception as exc:  # an MLflow outage must not fail the sweep
            if not self._warned:
                logger.warning("MLflow write failed, will retry: %s", exc)
                self._warned = True
            return False
        return True


def _error(trial: Any) -> str:
    """Return the last line of the trial's error file (the exception), at most 250 chars."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        if lines:
            return lines[-1][:250]
    return "unknown error"
