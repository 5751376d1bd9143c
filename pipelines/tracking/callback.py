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
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from pipelines.tracking import schema
from pipelines.tracking.client import client_for
from pipelines.tracking.record import SweepRecord
from pipelines.tracking.sweep_run import log_params
from trainables import results
from trainables.results import trial_index_from_id

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


def run_name(trial: Any, hparams: Mapping[str, Any], searched: list[str], offset: int = 0) -> str:
    """Name a child run so a person can tell trials apart: number plus key hyperparameters.

    ``offset`` continues the numbering of an extended sweep after its earlier trials.
    """
    parts = [f"trial-{trial_number(trial) + offset:03d}"]
    for key in [k for k in NAME_KEYS if k in searched and k in hparams][:3]:
        value = hparams[key]
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

    Every MLflow write runs, in order, on one background thread: Tune's event loop (which also
    starts trials and handles their results) never waits for the tracking store.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment_id: Experiment holding the sweep.
        parent_run_id: The sweep's parent run.
        searched: Names of the searched hyperparameters (used in run names).
        resolve: Turns a trial's config into its active hyperparameters (what is logged).
        max_epochs_key: Hyperparameter that holds the planned number of epochs.
        record: What every trial records for reproducibility (see :mod:`pipelines.sweep.replay`).
        trial_offset: Trials the sweep already has (``--extend``): numbering continues after.

    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        searched: list[str],
        resolve: Callable[[Mapping[str, Any]], dict[str, Any]] = dict,
        max_epochs_key: str = "epochs",
        record: SweepRecord | None = None,
        trial_offset: int = 0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.searched = searched
        self.resolve = resolve
        self.max_epochs_key = max_epochs_key
        self.record = record
        self.trial_offset = trial_offset
        self.run_ids: dict[str, str] = {}
        self.end_reasons: dict[str, str] = {}
        self._trials: dict[str, tuple[str, dict[str, Any]]] = {}
        self._pending: dict[str, list[Metric]] = {}
        self._last_flush = time.monotonic()
        self._warned = False
        self._client: MlflowClient | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._queued: list[Future[None]] = []

    @property
    def client(self) -> MlflowClient:
        """The MLflow client, created on first use (clients do not pickle)."""
        if self._client is None:
            self._client = client_for(self.tracking_uri)
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with its experiment state; client and thread are rebuilt.
        return {**self.__dict__, "_client": None, "_writer": None, "_queued": []}

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Create the trial's child run the first time it starts (not again on retries)."""
        if trial.trial_id not in self._trials:
            hparams = self.resolve(trial.config)
            self._trials[trial.trial_id] = (
                run_name(trial, hparams, self.searched, self.trial_offset),
                hparams,
            )
            self._submit(self._ensure_run, trial.trial_id)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        """Queue the result's metrics at step = training iteration."""
        step = int(result.get("training_iteration", 0))
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, value, now, step)
            for key, value in numeric_metrics(result).items()
            # MLflow stores NaN fine, but +/-inf breaks its charts; the diverged tag says why.
            if math.isfinite(value) or math.isnan(value)
        ]
        self._submit(self._buffer, trial.trial_id, metrics)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Note a retried failure on the child run (it stays open and continues)."""
        tag = [RunTag(schema.LAST_RETRY_ERROR, _error(trial))]
        self._submit(self._write_tags, trial.trial_id, tag)

    def on_trial_complete(
        self, iteration: int, trials: list[Any], trial: Any, **info: Any
    ) -> None:
        """Close the child run: completed, stopped early, early-stopped, diverged or failed."""
        last = trial.last_result or {}
        epoch = int(last.get(results.EPOCH, 0))
        planned = int(self.resolve(trial.config).get(self.max_epochs_key, epoch))
        if last.get(results.FAILED):
            # A bad hyperparameter (or FailedTrialError): failed for good, not retried.
            reason, status = "failed", "FAILED"
            detail = str(last.get(results.FAILED_REASON, "the trial failed"))
        elif last.get(results.DIVERGED):
            reason = "diverged"
            detail = f"{last.get(results.DIVERGED_METRIC)} was not finite at epoch {epoch}"
            status = "FAILED"
        elif last.get(results.EARLY_STOPPED):
            reason, status = "early_stopped", "FINISHED"
            detail = str(last.get(results.EARLY_STOPPING_REASON, "early stopping"))
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
        """Write whatever is still buffered and wait until every write is done."""
        self._submit(self.flush)
        self.drain()

    def drain(self) -> None:
        """Block until every queued MLflow write has run."""
        for future in self._queued:
            future.result()
        self._queued.clear()

    def flush(self) -> None:
        """Write buffered metrics; keep them for the next flush if MLflow is unreachable."""
        self._last_flush = time.monotonic()
        for trial_id in list(self._pending):
            run_id = self._ensure_run(trial_id)
            metrics = self._pending[trial_id]
            if run_id is None:
                continue
            for start in range(0, len(metrics), 1000):
                chunk = metrics[start : start + 1000]
                if not self._safe(self.client.log_batch, run_id, metrics=chunk):
                    self._pending[trial_id] = metrics[start:]
                    break
            else:
                del self._pending[trial_id]

    def _submit(self, write: Callable[..., Any], *args: Any) -> None:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunepipe-mlflow")
        self._queued = [f for f in self._queued if not f.done()]
        self._queued.append(self._writer.submit(write, *args))

    def _buffer(self, trial_id: str, metrics: list[Metric]) -> None:
        self._pending.setdefault(trial_id, []).extend(metrics)
        if time.monotonic() - self._last_flush >= FLUSH_EVERY_S:
            self.flush()

    def _close(self, trial: Any, status: str, reason: str, detail: str) -> None:
        self.end_reasons[trial.trial_id] = reason
        tags = [RunTag(schema.END_REASON, reason), RunTag(schema.END_DETAIL, detail[:5000])]
        self._submit(self._finish_run, trial.trial_id, tags, status)

    def _finish_run(self, trial_id: str, tags: list[RunTag], status: str) -> None:
        self.flush()
        run_id = self._write_tags(trial_id, tags)
        if run_id is not None:
            self._safe(self.client.set_terminated, run_id, status=status)

    def _write_tags(self, trial_id: str, tags: list[RunTag]) -> str | None:
        run_id = self._ensure_run(trial_id)
        if run_id is not None:
            self._safe(self.client.log_batch, run_id, tags=tags)
        return run_id

    def _ensure_run(self, trial_id: str) -> str | None:
        """Return the trial's child run id, creating the run if needed (None if MLflow is down)."""
        if trial_id in self.run_ids:
            return self.run_ids[trial_id]
        name, hparams = self._trials[trial_id]
        index = trial_index_from_id(trial_id)
        tags = {
            schema.PARENT: self.parent_run_id,
            schema.KIND: schema.KIND_TRIAL,
            schema.TRIAL_ID: trial_id,
            schema.TRIAL_INDEX: str(index),
            schema.SEED: str(hparams.get("seed", "")),
            **(self.record.tags() if self.record else {}),
        }
        try:
            run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        except Exception as exc:  # retried on the next write for this trial
            self._warn(exc)
            return None
        run_id: str = run.info.run_id
        self.run_ids[trial_id] = run_id
        self._safe(log_params, self.client, run_id, hparams)
        if self.record is not None:
            trial_record = self.record.trial(hparams, index)
            self._safe(self.client.log_dict, run_id, trial_record, schema.TRIAL_RECORD)
        return run_id

    def _safe(self, write: Any, *args: Any, **kwargs: Any) -> bool:
        try:
            write(*args, **kwargs)
        except Exception as exc:  # an MLflow outage must not fail the sweep
            self._warn(exc)
            return False
        return True

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            logger.warning("MLflow write failed, will retry: %s", exc)
            self._warned = True


def _error(trial: Any) -> str:
    """Return the last line of the trial's error file (the exception), at most 250 chars."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        if lines:
            return lines[-1][:250]
    return "unknown error"
