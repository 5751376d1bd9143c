"""A Tune callback that mirrors every trial as an MLflow child run of the sweep.

Runs on the driver. Metrics are buffered per trial and written with ``log_batch`` (one SQLite
write per flush instead of one per value). MLflow being unreachable never fails the sweep: the
buffer is kept and written on the next flush, and a warning is printed once.

A sweep can outlive its driver (``tunepipe sweep --resume``), and a trial its worker (Tune's
retries): the callback's state (trial -> child run) travels in Tune's experiment snapshot, a
resumed sweep finds the child runs a stale snapshot does not know by their trial-id tag, and a
step a restored trial reports again is not written twice: each metric history has every step once.
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
#: How often the driver marks the parent run as still driven (see pipelines.tracking.orphans).
HEARTBEAT_EVERY_S = 60.0
#: The metric every trainable reports once per step; its history says which steps are written.
STEP_METRIC = results.EPOCH
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
        once_per_step: Write each step of a trial once (a restored trial's repeated steps are
            skipped). Off under PBT, whose exploiting trials legitimately go back in epochs.

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
        once_per_step: bool = True,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.searched = searched
        self.resolve = resolve
        self.max_epochs_key = max_epochs_key
        self.record = record
        self.trial_offset = trial_offset
        self.once_per_step = once_per_step
        self.run_ids: dict[str, str] = {}
        self.end_reasons: dict[str, str] = {}
        self._trials: dict[str, tuple[str, dict[str, Any]]] = {}
        self._pending: dict[str, list[Metric]] = {}
        self._last_flush = time.monotonic()
        self._warned = False
        self._client: MlflowClient | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._queued: list[Future[None]] = []
        self._logged_steps: dict[str, int] = {}
        self._reopened: set[str] = set()
        self._resumed = False
        self._last_heartbeat = 0.0

    @property
    def client(self) -> MlflowClient:
        """The MLflow client, created on first use (clients do not pickle)."""
        if self._client is None:
            self._client = client_for(self.tracking_uri)
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with its experiment state; client and thread are rebuilt.
        return {**self.__dict__, "_client": None, "_writer": None, "_queued": []}

    def get_state(self) -> dict[str, Any]:
        """Return what a resumed sweep needs: each trial's child run, name and end reason.

        Tune asks for it when it writes its snapshot. Everything buffered is written first, so
        MLflow holds at least the steps the snapshot's checkpoints cover; what MLflow did not
        take (an outage) travels in the state and is written after a resume.
        """
        self._submit(self.flush)
        self.drain()
        return {
            "run_ids": dict(self.run_ids),
            "trials": dict(self._trials),
            "end_reasons": dict(self.end_reasons),
            "pending": {trial: list(metrics) for trial, metrics in self._pending.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Take the state of Tune's snapshot: the sweep is being resumed."""
        self.run_ids.update(state.get("run_ids", {}))
        self._trials.update(state.get("trials", {}))
        self.end_reasons.update(state.get("end_reasons", {}))
        for trial, metrics in state.get("pending", {}).items():
            self._pending.setdefault(trial, []).extend(metrics)
        self._resumed = True

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Create the trial's child run the first time it starts (not again on retries).

        After a resume the trial's run exists already: it is reopened (RUNNING) instead.
        """
        if trial.trial_id not in self._trials:
            hparams = self.resolve(trial.config)
            self._trials[trial.trial_id] = (
                run_name(trial, hparams, self.searched, self.trial_offset),
                hparams,
            )
            self._submit(self._ensure_run, trial.trial_id)
        elif self._resumed and trial.trial_id not in self._reopened:
            self._submit(self._reopen, trial.trial_id)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        """Queue the result's metrics at step = epoch (Tune's iteration if there is none).

        The epoch, not Tune's iteration: a trial resumed from another checkpoint than the one
        Tune recorded (see trainables.reporting) counts its epochs right, Tune's iterations not.
        """
        step = int(result.get(STEP_METRIC) or result.get("training_iteration", 0))
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, value, now, step)
            for key, value in numeric_metrics(result).items()
            # MLflow stores NaN fine, but +/-inf breaks its charts; the diverged tag says why.
            if math.isfinite(value) or math.isnan(value)
        ]
        self._submit(self._buffer, trial.trial_id, step, metrics)

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

    def close_interrupted(self, detail: str) -> list[str]:
        """Close every started, unfinished trial's run as KILLED (the sweep was interrupted).

        Returns:
            The ids of the trials closed here; ``--resume`` reopens their runs.

        """
        open_trials = [t for t in self._trials if t not in self.end_reasons]
        tags = [RunTag(schema.END_REASON, schema.INTERRUPTED), RunTag(schema.END_DETAIL, detail)]
        for trial_id in open_trials:
            self._submit(self._finish_run, trial_id, tags, "KILLED")
        self._submit(self.flush)
        self.drain()
        return open_trials

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
        if self._last_flush - self._last_heartbeat >= HEARTBEAT_EVERY_S:
            self._last_heartbeat = self._last_flush
            heartbeat = [RunTag(schema.HEARTBEAT, str(int(time.time())))]
            self._safe(self.client.log_batch, self.parent_run_id, tags=heartbeat)
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

    def _buffer(self, trial_id: str, step: int, metrics: list[Metric]) -> None:
        logged = self._logged_step(trial_id)
        if self.once_per_step and logged is not None and step <= logged:
            # A trial restored from an earlier checkpoint reports these steps again: the first
            # report is what was recorded, and a metric history holds each step once.
            logger.debug("trial %s: step %d is already recorded", trial_id, step)
            return
        self._logged_steps[trial_id] = max(step, logged or 0)
        self._pending.setdefault(trial_id, []).extend(metrics)
        if time.monotonic() - self._last_flush >= FLUSH_EVERY_S:
            self.flush()

    def _logged_step(self, trial_id: str) -> int | None:
        """Return the last step of the trial already written or queued (None: none yet).

        After a resume, MLflow knows better than the snapshot, which can be older than the last
        flush: the history of the step metric is read once per trial.
        """
        if self._resumed and trial_id not in self._reopened:
            self._reopen(trial_id)
        return self._logged_steps.get(trial_id)

    def _reopen(self, trial_id: str) -> None:
        """Mark a resumed trial's run RUNNING again and learn which steps it holds."""
        if trial_id in self._reopened:
            return
        run_id = self._ensure_run(trial_id)
        if run_id is None:
            return
        history = self._safe_read(self.client.get_metric_history, run_id, STEP_METRIC)
        if history is None:
            return  # MLflow is down: try again with the next result
        self._reopened.add(trial_id)
        # What MLflow holds, and what waits to be written to it, is what the trial reported.
        steps = [int(m.step) for m in [*history, *self._pending.get(trial_id, [])]]
        if steps:
            self._logged_steps[trial_id] = max(steps)
        if trial_id not in self.end_reasons:
            self._safe(self.client.update_run, run_id, status="RUNNING")

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
        if self._resumed:
            # The run may have been created after the snapshot this resume started from.
            found = self._safe_read(
                self.client.search_runs,
                [self.experiment_id],
                filter_string=schema.trial_of(self.parent_run_id, trial_id),
                max_results=1,
            )
            if found is None:
                return None
            if found:
                self.run_ids[trial_id] = found[0].info.run_id
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

    def _safe_read(self, read: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return read(*args, **kwargs)
        except Exception as exc:  # an MLflow outage must not fail the sweep
            self._warn(exc)
            return None

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
