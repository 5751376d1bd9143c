"""A Tune callback that mirrors every trial as an MLflow child run of the sweep.

Runs on the driver. Metrics are buffered per trial and handed, every couple of seconds, to the
sweep's spool (:mod:`pipelines.tracking.spool`) as one ``log_batch`` write: the spool keeps
them on disk and writes them in order on its own thread, so Tune's event loop never waits for
MLflow and an outage loses nothing.

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
from pathlib import Path
from typing import Any

from ray.tune import Callback

from pipelines.tracking import schema
from pipelines.tracking.client import client_for
from pipelines.tracking.record import SweepRecord
from pipelines.tracking.spool import Spool
from pipelines.tracking.sweep_run import param_value
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

    Every write goes to the sweep's spool, which applies them in order on its own thread.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment_name: Experiment holding the sweep.
        parent_ref: The sweep's parent run, as a spool reference (:class:`~.sweep_run.SweepRun`).
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
        experiment_name: str,
        parent_ref: str,
        searched: list[str],
        resolve: Callable[[Mapping[str, Any]], dict[str, Any]] = dict,
        max_epochs_key: str = "epochs",
        record: SweepRecord | None = None,
        trial_offset: int = 0,
        once_per_step: bool = True,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.parent_ref = parent_ref
        self.searched = searched
        self.resolve = resolve
        self.max_epochs_key = max_epochs_key
        self.record = record
        self.trial_offset = trial_offset
        self.once_per_step = once_per_step
        self.end_reasons: dict[str, str] = {}
        self._trials: dict[str, tuple[str, dict[str, Any]]] = {}
        self._pending: dict[str, list[list[Any]]] = {}
        self._last_flush = time.monotonic()
        self._spool: Spool | None = None
        self._created: set[str] = set()
        self._logged_steps: dict[str, int] = {}
        self._reopened: set[str] = set()
        self._resumed = False
        self._last_heartbeat = 0.0
        self._placements: dict[str, tuple[str, str]] = {}

    def attach(self, spool: Spool, parent_ref: str) -> None:
        """Write through ``spool``, under the parent run ``parent_ref`` (its reference there).

        A callback restored from Tune's snapshot gets its new driver's spool, in which the
        parent run is named by its id.
        """
        self._spool = spool
        self.parent_ref = parent_ref

    @property
    def spool(self) -> Spool:
        """The spool every write goes to."""
        if self._spool is None:
            raise RuntimeError("the trial callback has no spool: call attach() first")
        return self._spool

    @property
    def trial_ids(self) -> list[str]:
        """The ids of the trials that have started."""
        return list(self._trials)

    def run_ref(self, trial_id: str) -> str:
        """Return the spool reference of a trial's child run."""
        return f"trial:{self.parent_ref}/{trial_id}"

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with its experiment state. The spool belongs to this driver:
        # a resumed driver attaches its own, whose runs are found, not created again.
        return {**self.__dict__, "_spool": None, "_created": set()}

    def get_state(self) -> dict[str, Any]:
        """Return what a resumed sweep needs: each trial's name, hyperparameters, end reason.

        Tune asks for it when it writes its snapshot. What is buffered goes to the spool first,
        so the spool (on disk) holds at least the steps the snapshot's checkpoints cover.
        """
        self.flush()
        return {"trials": dict(self._trials), "end_reasons": dict(self.end_reasons)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Take the state of Tune's snapshot: the sweep is being resumed."""
        self._trials.update(state.get("trials", {}))
        self.end_reasons.update(state.get("end_reasons", {}))
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
            self._ensure_run(trial.trial_id)
        elif self._resumed:
            self._reopen(trial.trial_id)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        """Buffer the result's metrics at step = epoch (Tune's iteration if there is none).

        The epoch, not Tune's iteration: a trial resumed from another checkpoint than the one
        Tune recorded (see trainables.reporting) counts its epochs right, Tune's iterations not.
        """
        step = int(result.get(STEP_METRIC) or result.get("training_iteration", 0))
        now = int(time.time() * 1000)
        metrics = [
            [key, value, now, step]
            for key, value in numeric_metrics(result).items()
            # MLflow stores NaN fine, but +/-inf breaks its charts; the diverged tag says why.
            if math.isfinite(value) or math.isnan(value)
        ]
        self._buffer(trial.trial_id, step, metrics)
        self._tag_placement(trial.trial_id, result)

    def _tag_placement(self, trial_id: str, result: dict[str, Any]) -> None:
        """Tag the child run with the trial's device and node, when first seen or changed."""
        placement = (str(result.get(results.DEVICE) or ""), str(result.get(results.NODE_ID) or ""))
        if not placement[0] or self._placements.get(trial_id) == placement:
            return
        self._placements[trial_id] = placement
        self._write_tags(trial_id, {schema.DEVICE: placement[0], schema.NODE_ID: placement[1]})

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Note a retried failure on the child run (it stays open and continues)."""
        self._write_tags(trial.trial_id, {schema.LAST_RETRY_ERROR: _error(trial)})

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
        self._close(trial.trial_id, status, reason, detail)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Close the child run as failed, with a one-line error summary."""
        self._close(trial.trial_id, "FAILED", "failed", _error(trial))

    def close_interrupted(self, detail: str) -> list[str]:
        """Close every started, unfinished trial's run as KILLED (the sweep was interrupted).

        Returns:
            The ids of the trials closed here; ``--resume`` reopens their runs.

        """
        open_trials = [t for t in self._trials if t not in self.end_reasons]
        tags = {schema.END_REASON: schema.INTERRUPTED, schema.END_DETAIL: detail}
        for trial_id in open_trials:
            self._finish_run(trial_id, tags, "KILLED")
        self.flush()
        return open_trials

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Hand whatever is still buffered to the spool."""
        self.flush()

    def flush(self) -> None:
        """Hand the buffered metrics to the spool (one write per trial), and the heartbeat."""
        self._last_flush = time.monotonic()
        if self._last_flush - self._last_heartbeat >= HEARTBEAT_EVERY_S:
            self._last_heartbeat = self._last_flush
            heartbeat = {schema.HEARTBEAT: str(int(time.time()))}
            self.spool.append({"op": "log_batch", "run": self.parent_ref, "tags": heartbeat})
        for trial_id in list(self._pending):
            self._flush_trial(trial_id)

    def _flush_trial(self, trial_id: str) -> None:
        metrics = self._pending.pop(trial_id, [])
        if metrics:
            self._ensure_run(trial_id)
            op = {"op": "log_batch", "run": self.run_ref(trial_id), "metrics": metrics}
            self.spool.append(op)

    def _buffer(self, trial_id: str, step: int, metrics: list[list[Any]]) -> None:
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
        """Return the last step of the trial already recorded (None: none yet).

        After a resume, MLflow knows better than the snapshot, which can be older than the last
        flush: the history of the step metric is read once per trial.
        """
        if self._resumed and trial_id not in self._reopened:
            self._reopen(trial_id)
        return self._logged_steps.get(trial_id)

    def _reopen(self, trial_id: str) -> None:
        """Mark a resumed trial's run RUNNING again and learn which steps MLflow holds.

        A resumed driver first wrote what its dead predecessor spooled (SweepRun.mark_orphans),
        so MLflow's history is the whole record. With MLflow down this is tried again with the
        trial's next result.
        """
        if trial_id in self._reopened:
            return
        history = self._recorded_history(trial_id)
        if history is None:
            return
        self._reopened.add(trial_id)
        # What MLflow holds, and what waits to be written to it, is what the trial reported.
        steps = [*history, *(int(m[3]) for m in self._pending.get(trial_id, []))]
        if steps:
            self._logged_steps[trial_id] = max([*steps, self._logged_steps.get(trial_id, 0)])
        self._ensure_run(trial_id)
        if trial_id not in self.end_reasons:
            self.spool.append({"op": "status", "run": self.run_ref(trial_id), "status": "RUNNING"})

    def _recorded_history(self, trial_id: str) -> list[int] | None:
        """Return the steps MLflow holds for a trial ([] if it has no run; None: unreachable)."""
        parent = self.spool.resolve(self.parent_ref)
        if parent is None:
            return []  # the sweep's run is new in this driver: so are its trials' runs
        try:
            client = client_for(self.tracking_uri)
            experiment = client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                return []
            found = client.search_runs(
                [experiment.experiment_id],
                filter_string=schema.trial_of(parent, trial_id),
                max_results=1,
            )
            if not found:
                return []
            history = client.get_metric_history(found[0].info.run_id, STEP_METRIC)
        except Exception as exc:  # MLflow down: the next result tries again
            logger.debug("could not read trial %s's history: %s", trial_id, exc)
            return None
        return [int(m.step) for m in history]

    def _close(self, trial_id: str, status: str, reason: str, detail: str) -> None:
        self.end_reasons[trial_id] = reason
        tags = {schema.END_REASON: reason, schema.END_DETAIL: detail[:5000]}
        self._finish_run(trial_id, tags, status)

    def _finish_run(self, trial_id: str, tags: dict[str, str], status: str) -> None:
        self._flush_trial(trial_id)
        self._write_tags(trial_id, tags)
        now = int(time.time() * 1000)
        op = {"op": "status", "run": self.run_ref(trial_id), "status": status, "time": now}
        self.spool.append(op)

    def _write_tags(self, trial_id: str, tags: dict[str, str]) -> None:
        self._ensure_run(trial_id)
        self.spool.append({"op": "log_batch", "run": self.run_ref(trial_id), "tags": tags})

    def _ensure_run(self, trial_id: str) -> None:
        """Spool the creation of the trial's child run, once per driver.

        The spool finds the run by its parent and trial id before it creates one, so a run an
        earlier driver (or an earlier attempt of this write) created is reused, never doubled.
        """
        if trial_id in self._created:
            return
        self._created.add(trial_id)
        name, hparams = self._trials[trial_id]
        index = trial_index_from_id(trial_id)
        tags = {
            schema.KIND: schema.KIND_TRIAL,
            schema.TRIAL_ID: trial_id,
            schema.TRIAL_INDEX: str(index),
            schema.SEED: str(hparams.get("seed", "")),
            **(self.record.tags() if self.record else {}),
        }
        ref = self.run_ref(trial_id)
        self.spool.append(
            {
                "op": "create_run",
                "key": ref,
                "experiment": self.experiment_name,
                "name": name,
                "time": int(time.time() * 1000),
                "tags": tags,
                "ref_tags": {schema.PARENT: self.parent_ref},
            }
        )
        params = {key: param_value(value) for key, value in hparams.items()}
        self.spool.append({"op": "log_batch", "run": ref, "params": params})
        if self.record is not None:
            content = self.record.trial(hparams, index)
            self.spool.append(
                {"op": "dict", "run": ref, "content": content, "file": schema.TRIAL_RECORD}
            )


def _error(trial: Any) -> str:
    """Return the last line of the trial's error file (the exception), at most 250 chars."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        if lines:
            return lines[-1][:250]
    return "unknown error"
