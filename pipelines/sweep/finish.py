"""After the trials: choose the best, record and register it, draw the plots, sum the sweep up."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.data import SweepData
from pipelines.sweep.best import (
    BestTrial,
    RankedTrial,
    count_end_reasons,
    is_better,
    select_best,
    top_trials,
)
from pipelines.sweep.extend import PreviousBest
from pipelines.sweep.plan import SweepPlan
from pipelines.tracking import schema
from pipelines.tracking.callback import MlflowTrialCallback
from pipelines.tracking.history import load_sweep_history
from pipelines.tracking.models import save_best_model
from pipelines.tracking.sweep_run import SweepRun
from trainables.function_trainable import MODEL_FOLDER

logger = logging.getLogger(__name__)

#: Trials shown in the summary table.
TOP_K = 5


class SweepFailed(RuntimeError):
    """A sweep ran but produced nothing usable (no trial reached a finite metric)."""


@dataclass(frozen=True)
class SweepSummary:
    """What a finished sweep produced and where to find it.

    Attributes:
        experiment_name: MLflow experiment (and registered model) name.
        metric: The metric optimised; ``mode`` says in which direction.
        mode: ``"min"`` or ``"max"``.
        best_config: Hyperparameters of the best trial.
        best_metric: Its best value of ``metric`` (at ``best_epoch``).
        best_trial_id: Tune's id of the best trial.
        best_epoch: Epoch at which the best value was reached.
        best_checkpoint: Folder of the checkpoint holding the best model, if one was kept.
        mlflow_parent_run_id: The sweep's parent run.
        mlflow_tracking_uri: Where MLflow records live.
        mlflow_experiment_id: The experiment's id (for UI links).
        model_version: Registered model version of the best model, if registered.
        end_reasons: Number of trials per end reason (completed, stopped_early, diverged, failed).
        searched: Names of the hyperparameters the search space varies.
        storage_path: Ray Tune's folder for this sweep.
        elapsed_s: Wall time of the sweep.
        results: Tune's ResultGrid, for further analysis.
        new_best: False when an extension found nothing better and the sweep's best stands.
        top: This run's best trials, best first (for the summary table).
        mlflow_pending: MLflow writes still waiting in the spool (MLflow was unreachable at
            the end); the next ``tunepipe`` command, or ``tunepipe sync``, writes them.
        spool: The journal they wait in.

    """

    experiment_name: str
    metric: str
    mode: str
    best_config: dict[str, Any]
    best_metric: float
    best_trial_id: str
    best_epoch: int
    best_checkpoint: str | None
    mlflow_parent_run_id: str
    mlflow_tracking_uri: str
    mlflow_experiment_id: str
    model_version: str | None
    end_reasons: dict[str, int]
    searched: tuple[str, ...]
    storage_path: str
    elapsed_s: float
    results: Any = field(repr=False, compare=False)
    new_best: bool = True
    top: tuple[RankedTrial, ...] = ()
    mlflow_pending: int = 0
    spool: str | None = None


def finish_sweep(
    plan: SweepPlan,
    data: SweepData,
    grid: Any,
    sweep: SweepRun,
    tracker: MlflowTrialCallback,
    elapsed: float,
    previous: PreviousBest | None = None,
) -> SweepSummary:
    """Record how trials ended and the best one, register its model, attach the plots.

    Args:
        plan: The sweep's plan.
        data: Its data (the validation rows give the logged model an input example).
        grid: Tune's ResultGrid.
        sweep: The parent run, closed here.
        tracker: The trial callback (end reasons, child run ids).
        elapsed: Wall time so far.
        previous: An extended sweep's best before this run (kept unless beaten).

    Raises:
        SweepFailed: When no trial produced a finite metric (and no earlier best stands).

    """
    config = plan.config
    reasons = count_end_reasons(grid, tracker.end_reasons)
    sweep.log_metrics({f"trials_{k}": v for k, v in reasons.items()} | {"elapsed_s": elapsed})
    best = select_best(grid, config.metric, config.mode, plan.resolve)
    if best is None and previous is None:
        sweep.set_tags({schema.OUTCOME: "no trial produced a finite metric"})
        sweep.end("FAILED")
        raise SweepFailed("no trial of the sweep produced a finite metric; see MLflow for why")
    if best is not None and is_better(
        best.value, previous.value if previous else None, config.mode
    ):
        version = _record_best(plan, data, best, sweep, tracker)
        kept, improved = best, True
    else:
        # An extension that found nothing better: the sweep's best stands, and its best-so-far
        # history gets a point that says so.
        assert previous is not None  # guaranteed: best is None or not better than previous
        name = schema.best_metric(config.metric)
        sweep.log_metrics({name: previous.value}, step=sweep.next_step(name))
        version = previous.model_version
        kept = BestTrial(previous.trial_id, previous.config, previous.value, previous.epoch, None)
        improved = False
    if sweep.sync():
        attach_plots(config.tracking.uri, sweep)
    else:  # drawn from MLflow's histories: `tunepipe report` draws them once MLflow is back
        logger.warning(
            "MLflow is unreachable: the sweep's plots are not drawn; `tunepipe report %s` "
            "draws them once it is back",
            config.experiment_name,
        )
    sweep.end("FINISHED")
    pending = sweep.close()
    return SweepSummary(
        experiment_name=config.experiment_name,
        metric=config.metric,
        mode=config.mode,
        best_config=kept.config,
        best_metric=kept.value,
        best_trial_id=kept.trial_id,
        best_epoch=kept.epoch,
        best_checkpoint=kept.checkpoint_location,
        mlflow_parent_run_id=sweep.run_id or sweep.ref or "",
        mlflow_tracking_uri=config.tracking.uri,
        mlflow_experiment_id=sweep.experiment_id,
        model_version=version,
        end_reasons=reasons,
        searched=plan.searched,
        storage_path=str(grid.experiment_path),
        elapsed_s=elapsed,
        results=grid,
        new_best=improved,
        top=top_trials(grid, config.metric, config.mode, TOP_K),
        mlflow_pending=pending,
        spool=str(sweep.spool.path) if pending else None,
    )


def attach_plots(tracking_uri: str, sweep: SweepRun) -> None:
    """Draw the sweep's plots from what MLflow recorded and attach them to the parent run.

    The plots are a view of the sweep, not part of its result: a failure to draw one is logged
    and never fails a sweep that has already found and registered its best model.
    """
    try:
        from pipelines.views.plots import write_plots  # matplotlib loads only when a sweep ends

        history = load_sweep_history(tracking_uri, sweep.run_id or "")
        with tempfile.TemporaryDirectory(prefix="tunepipe-plots-") as folder:
            write_plots(history, Path(folder))
            sweep.log_plots(Path(folder))
    except Exception as exc:  # any plotting failure is only a warning
        logger.warning("could not draw the sweep's plots: %s", exc)


def _record_best(
    plan: SweepPlan,
    data: SweepData,
    best: BestTrial,
    sweep: SweepRun,
    tracker: MlflowTrialCallback,
) -> str | None:
    """Record the best trial on the parent run and register its model; return the version.

    The version is None when no model was registered, or when MLflow has not taken the
    registration within the grace period (it waits in the spool and is registered later).
    """
    config = plan.config
    tags = {schema.BEST_TRIAL_ID: best.trial_id, schema.BEST_EPOCH: str(best.epoch)}
    child = {schema.BEST_CHILD_RUN_ID: tracker.run_ref(best.trial_id)}
    with best.local_checkpoint() as checkpoint:
        sweep.log_best(best.config, config.metric, best.value, tags, checkpoint, child)
        if not (config.tracking.register_model and checkpoint):
            return None
        if plan.info.own_loop:
            version = _register_logged_model(plan, checkpoint, sweep)
        else:
            version = _register_checkpoint(plan, data, best, checkpoint, sweep)
    if version is None:
        return None
    sweep.sync()
    return sweep.resolve(version)


def _register_logged_model(plan: SweepPlan, checkpoint: Path, sweep: SweepRun) -> str | None:
    """Register the model the best trial's training function handed to ``ctx.log_model``."""
    folder = checkpoint / MODEL_FOLDER
    if not (folder / "MLmodel").is_file():
        logger.warning(
            "the best trial's training function never called ctx.log_model with its "
            "checkpoint: there is no model to register"
        )
        sweep.set_tags({schema.OUTCOME: "no model to register: ctx.log_model was not called"})
        return None
    return sweep.register_model(folder, plan.config.experiment_name, plan.info.framework)


def _register_checkpoint(
    plan: SweepPlan, data: SweepData, best: BestTrial, checkpoint: Path, sweep: SweepRun
) -> str:
    """Rebuild the best trial's model from its (local) checkpoint and register it."""
    with tempfile.TemporaryDirectory(prefix="tunepipe-model-") as folder:
        model = Path(folder) / schema.MODEL
        save_best_model(
            info=plan.info,
            hparams=best.config,
            spec=data.spec,
            checkpoint_dir=checkpoint,
            input_example=data.input_example(8),
            folder=model,
        )
        return sweep.register_model(model, plan.config.experiment_name, plan.info.framework)
