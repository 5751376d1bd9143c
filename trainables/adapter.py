"""Turns any implementation of the trainable contract into a Ray Tune function trainable.

The epoch loop lives here once for every framework: resolve the trial's active hyperparameters,
restore from a checkpoint, set the epoch's learning rate from the schedule, train and evaluate,
stop a diverged trial, stop early on a stalled metric (restoring the best weights), and report
metrics and checkpoints through :mod:`trainables.reporting`.

A trial that cannot succeed (a :class:`~trainables.errors.FailedTrialError`, or a user-input error
such as a hyperparameter value the trainable refuses) reports why and ends as failed at once, so
Tune does not retry it; any other exception propagates and Tune retries the trial as a crash.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces.errors import UserInputError
from trainables import reporting
from trainables.early_stopping import EarlyStopping, early_stopping_from_hparams
from trainables.errors import FailedTrialError
from trainables.function_trainable import SaveModel, TrialContext, run_training_function
from trainables.lr_schedules import LrSchedule, schedule_from_hparams
from trainables.metrics import ExtraMetrics, trainable_metrics
from trainables.protocol import BatchSource, DataSpec
from trainables.registry import TrainableInfo
from trainables.results import (
    DIVERGED,
    DIVERGED_METRIC,
    EARLY_STOPPED,
    EARLY_STOPPING_REASON,
    EPOCH,
    FAILED,
    FAILED_REASON,
    first_non_finite,
)
from trainables.usage import UsageMeter

CHECKPOINT_META = "tunepipe.json"


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of a sweep shares besides its hyperparameters.

    Attributes:
        info: The trainable's registry entry (its class is imported inside the trial).
        metric: The sweep's metric; early stopping monitors it.
        mode: ``"min"`` or ``"max"``.
        checkpoint_every: Epochs between checkpoints.
        resolve: Turns Tune's trial config into the flat dict of active hyperparameters.
        extra_metrics: Library and user metrics computed on the validation split each epoch
            (None: only the trainable's own).
        save_model: Saves a model a training function hands to ``ctx.log_model`` in MLflow's
            format (the pipeline provides it; trainables never import MLflow).
        workers: Data-parallel workers per trial (above 1: each trial is a Ray Train run, see
            :mod:`trainables.data_parallel`).
        cpu_per_worker: CPUs each of those workers reserves.
        gpu_per_worker: GPUs each of those workers reserves.
        worker_failures: Times a trial's Train run restarts its workers after losing one.

    """

    info: TrainableInfo
    metric: str
    mode: str
    checkpoint_every: int
    resolve: Callable[[dict[str, Any]], dict[str, Any]]
    extra_metrics: ExtraMetrics | None = None
    save_model: SaveModel | None = None
    workers: int = 1
    cpu_per_worker: float = 1.0
    gpu_per_worker: float = 0.0
    worker_failures: int = 0

    def extra_metrics_for(self, spec: DataSpec) -> ExtraMetrics | None:
        """Return the extra metrics bound to the data's target scale."""
        if self.extra_metrics is None:
            return None
        return dataclasses.replace(self.extra_metrics, target_std=spec.target_std)


#: Runs one trial from its settings, resolved hyperparameters and the sweep's data.
TrialRunner = Callable[[TrialSettings, dict[str, Any], BatchSource], None]


def make_trial_function(
    settings: TrialSettings, runner: TrialRunner | None = None
) -> Callable[[dict[str, Any], BatchSource], None]:
    """Return the function Tune runs for each trial.

    Tune passes the trial's config as the first argument; the sweep's data is bound with
    ``tune.with_parameters`` so it travels through the object store once, not per trial.
    ``runner`` runs the trial (default: the epoch loop here, or the user's training function);
    data-parallel trials pass theirs (:mod:`trainables.data_parallel`).
    """

    def run_trial(config: dict[str, Any], data: BatchSource) -> None:
        reporting.remove_leftovers()  # of an earlier attempt of this trial, killed on this node
        hparams = settings.resolve(config)
        try:
            if runner is not None:
                runner(settings, hparams, data)
            elif settings.info.own_loop:
                _run_function(settings, hparams, data)
            else:
                _Trial(settings, hparams, data).run()
        except (FailedTrialError, UserInputError) as exc:
            # Deterministic: a retry would fail the same way. Report it and end the trial.
            reason = exc.one_line() if isinstance(exc, UserInputError) else str(exc)
            reporting.report({settings.metric: math.nan, FAILED: 1, FAILED_REASON: reason[:500]})

    return run_trial


def _run_function(settings: TrialSettings, hparams: dict[str, Any], data: BatchSource) -> None:
    """Run the user's training function: it has its own loop and reports through its context."""
    cpus, gpus = reporting.trial_resources()
    index = reporting.trial_index()
    device = "cuda" if gpus > 0 else "cpu"
    meter = UsageMeter(device, cpus)

    def report(values: dict[str, Any], save: Callable[[Path], None] | None = None) -> None:
        reporting.report({**values, **meter.sample()}, save=save)

    ctx = TrialContext(
        hparams,
        # No framework: a training function always gets numpy batches.
        data.for_trial(hparams, trial=index, cpus=cpus, device=device),
        data.spec,
        metric=settings.metric,
        device=device,
        trial_index=index,
        save_model=settings.save_model,
        extra_metrics=settings.extra_metrics_for(data.spec),
        report=report,
    )
    run_training_function(settings.info.load_function(), hparams, ctx)


class _Trial:
    """One trial's epoch loop (a class so the loop's state has names, not a long function)."""

    def __init__(self, settings: TrialSettings, hparams: dict[str, Any], data: BatchSource):
        self.settings, self.hparams = settings, hparams
        self.cpus, gpus = reporting.trial_resources()
        self.trial_index = reporting.trial_index()
        implementation = settings.info.load_class()
        if hasattr(implementation, "set_cpu_threads"):
            implementation.set_cpu_threads(self.cpus)
        device_for = getattr(implementation, "device_for", None)
        device = device_for(gpus) if device_for else "cpu"
        self.data = data.for_trial(
            hparams,
            trial=self.trial_index,
            cpus=self.cpus,
            device=device,
            framework=settings.info.batch_framework,
        )
        self.extra_metrics = settings.extra_metrics_for(data.spec)
        self.trainable = settings.info.instantiate()
        self.trainable.setup(hparams, data.spec, device)
        self.usage = UsageMeter(device, self.cpus)
        # Trainables without a learning rate (random forests) have nothing to schedule.
        self.schedule: LrSchedule | None = (
            schedule_from_hparams(hparams) if "lr" in hparams else None
        )
        self.stopper: EarlyStopping | None = early_stopping_from_hparams(hparams, settings.mode)
        self.restore_best = self.stopper is not None and self.stopper.restore_best
        # The early-stopping best weights, in a folder that lives as long as run() (set there).
        self.best_dir = Path()
        self.epochs = int(hparams["epochs"])
        self.last_epoch = 0

    def run(self) -> None:
        with reporting.temporary_folder("best") as best:
            self.best_dir = Path(best)
            self._epochs()

    def _epochs(self) -> None:
        self._restore()
        for epoch in range(self.last_epoch + 1, self.epochs + 1):
            metrics = self._train_and_evaluate(epoch)
            bad = first_non_finite(self._guarded(metrics))
            if bad is not None:
                # A diverged trial ends now and is flagged; it is never chosen as best.
                reporting.report({**metrics, DIVERGED: 1, DIVERGED_METRIC: bad})
                return
            metrics[DIVERGED] = 0
            if self._should_stop_early(metrics, epoch):
                self._finish_early(metrics, epoch)
                return
            due = epoch % self.settings.checkpoint_every == 0 or epoch == self.epochs
            reporting.report(metrics, save=self._saver(epoch) if due else None)

    def _train_and_evaluate(self, epoch: int) -> dict[str, Any]:
        scheduled = self.schedule is not None and self.schedule.name != "constant"
        if scheduled and hasattr(self.trainable, "set_lr"):
            assert self.schedule is not None
            self.trainable.set_lr(self.schedule.lr_for_epoch(epoch - 1))
        batches = self.data.train_batches(epoch, int(self.hparams["batch_size"]))
        metrics: dict[str, Any] = {**self.trainable.train_epoch(batches)}
        metrics.update(self.trainable.evaluate(self.data.val_batches()))
        metrics.update(self._extra_metrics())
        metrics.update(self.usage.sample())
        metrics[EPOCH] = epoch
        if self.schedule is not None:
            self.schedule.observe(float(metrics.get("val_loss", math.nan)))
        return metrics

    def _extra_metrics(self) -> dict[str, float]:
        if self.extra_metrics is None:
            return {}
        return trainable_metrics(self.trainable, self.extra_metrics, self.data.val_batches())

    def _guarded(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Return the metrics whose NaN/inf means divergence (the trainable's and the sweep's).

        A library metric can be undefined on a split (ROC AUC with one class): not divergence.
        """
        extra = self.extra_metrics
        names = () if extra is None else extra.reported_names()
        return {k: v for k, v in metrics.items() if k not in names or k == self.settings.metric}

    def _should_stop_early(self, metrics: dict[str, Any], epoch: int) -> bool:
        if self.stopper is None:
            return False
        if self.stopper.update(float(metrics[self.settings.metric]), epoch) and self.restore_best:
            self.trainable.save(self.best_dir)
        return self.stopper.should_stop

    def _finish_early(self, metrics: dict[str, Any], epoch: int) -> None:
        assert self.stopper is not None
        reason = self.stopper.reason(self.settings.metric)
        if self.restore_best:
            # The trial ends holding its best weights; the last report describes that model.
            self.trainable.load(self.best_dir)
            metrics.update(self.trainable.evaluate(self.data.val_batches()))
        final = {**metrics, EARLY_STOPPED: 1, EARLY_STOPPING_REASON: reason}
        reporting.report(final, save=self._saver(epoch))

    def _restore(self) -> None:
        with reporting.latest_checkpoint() as checkpoint:
            if checkpoint is None:
                return
            self.trainable.load(checkpoint)
            meta = json.loads((checkpoint / CHECKPOINT_META).read_text())
        self.last_epoch = int(meta["epoch"])
        if self.schedule is not None and meta.get("schedule"):
            self.schedule.load_state_dict(meta["schedule"])
        if self.stopper is not None and meta.get("early_stopping"):
            self.stopper.load_state_dict(meta["early_stopping"])

    def _saver(self, epoch: int) -> Callable[[Path], None]:
        def save(directory: Path) -> None:
            self.trainable.save(directory)
            meta = {
                "epoch": epoch,
                "hparams": self.hparams,
                "schedule": self.schedule.state_dict() if self.schedule else None,
                "early_stopping": self.stopper.state_dict() if self.stopper else None,
            }
            (directory / CHECKPOINT_META).write_text(json.dumps(meta, default=str))

        return save
