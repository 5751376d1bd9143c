"""Assembling the Tuner and running a sweep end to end: :func:`run_sweep`.

Order matters: everything that can be wrong with the user's input is checked first
(:func:`~pipelines.validate.plan_sweep`), then Ray is reached and the data prepared once, and only
then is anything written to MLflow, so a rejected sweep leaves no trace there.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pipelines.cluster import check_resources, ray_session
from pipelines.config import ExperimentConfig, load_config
from pipelines.data import SweepData, prepare_arrays, prepare_data
from pipelines.extend import PreviousBest, check_same_data, find_sweep_to_extend
from pipelines.reproduce import SweepRecord, code_version, package_versions
from pipelines.results import BestTrial, count_end_reasons, is_better, select_best
from pipelines.tracking import MlflowTrialCallback, SweepRun, register_best_model
from pipelines.validate import SweepPlan, plan_sweep
from pipelines.warm_start import WarmStart, earlier_trials

logger = logging.getLogger(__name__)


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


def run_sweep(
    config: str | Path | ExperimentConfig,
    overrides: dict[str, Any] | None = None,
    *,
    address: str | None = None,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
    extend: str | None = None,
    warm_start: WarmStart | None = None,
    tags: Mapping[str, str] | None = None,
) -> SweepSummary:
    """Run a hyperparameter sweep and record it in MLflow.

    Args:
        config: Path of an experiment YAML file, or an already loaded config.
        overrides: Dotted keys to replace, e.g. ``{"search.num_samples": 8}``.
        address: Ray cluster to use (else ``RAY_ADDRESS``, else a private local instance).
        callbacks: Extra Ray Tune callbacks.
        progress: Show a live progress view in the terminal.
        extend: Parent run id of an earlier sweep to add ``search.num_samples`` trials to
            (:mod:`pipelines.extend`); its searcher continues from the sweep's trials.
        warm_start: Earlier results for the searcher (:mod:`pipelines.warm_start`).
        tags: Extra tags for the sweep's parent run.

    Returns:
        The summary of the finished sweep (for an extension: the sweep's best so far).

    Raises:
        UserInputError: For invalid config, search space or data, before any cluster work.

    """
    if not isinstance(config, ExperimentConfig):
        config = load_config(config, overrides)
    elif overrides:
        raise TypeError("overrides apply to a config file; pass a path or apply them yourself")
    plan = plan_sweep(config)
    base = find_sweep_to_extend(config, extend) if extend is not None else None
    if base is not None:
        from mlflow.tracking import MlflowClient

        earlier = earlier_trials(
            MlflowClient(config.tracking.uri),
            base.experiment_id,
            plan.space,
            config.metric,
            config.mode,
            [base.run_id],
        )
        # Its trials were run already: no re-evaluation, but every one seeds the searcher.
        warm_start = WarmStart(tuple(earlier), top_k=0, mode=config.mode)
        check_same_data(base, prepare_arrays(config.data)[0].fingerprint())
    if warm_start is not None:
        plan = plan_sweep(config, warm_start)
    if plan.scheduler_name == "pbt" and config.search.seed is not None:
        # Ray's PBT draws its perturbations from Python's global generator.
        random.seed(config.search.seed)
    started = time.monotonic()
    with ray_session(address):
        check_resources(config.resources)
        data = prepare_data(config.data, cpus_per_trial=max(1, int(config.resources.cpu)))
        sweep = SweepRun(config.tracking.uri, config.experiment_name)
        run_tags = {**_tags(plan, data), **(tags or {})}
        if warm_start is not None:
            run_tags["tunepipe.warm_start_trials"] = str(len(warm_start.trials))
        if base is None:
            parent_id = sweep.start(config.to_dict(), config.trainable.search_space, run_tags)
        else:
            parent_id = base.run_id
            sweep.resume(parent_id)
            sweep.set_tags({**run_tags, "tunepipe.extensions": str(base.extensions + 1)})
        record = SweepRecord(
            config.to_dict(), code_version(), package_versions(), data.fingerprint
        )
        tracker = MlflowTrialCallback(
            config.tracking.uri,
            sweep.experiment_id,
            parent_id,
            plan.space.names(),
            plan.resolve,
            record=record,
            trial_offset=base.trials if base is not None else 0,
        )
        extra = [*callbacks]
        if progress:
            from pipelines.progress import LiveProgress

            planned = partial(planned_epochs, plan.resolve, plan.max_epochs)
            extra.append(
                LiveProgress(config.metric, config.mode, plan.num_samples, planned_epochs=planned)
            )
        tuner = build_tuner(plan, data, [tracker, *extra])
        try:
            grid = tuner.fit()
        except BaseException:
            sweep.end("KILLED")
            raise
        previous = base.best if base is not None else None
        summary = _finish(plan, data, grid, sweep, tracker, time.monotonic() - started, previous)
    return summary


def planned_epochs(
    resolve: Callable[[Mapping[str, Any]], dict[str, Any]],
    default: int,
    trial_config: Mapping[str, Any],
) -> int:
    """Return how many epochs a trial was set to run (its ``epochs`` hyperparameter)."""
    return int(resolve(trial_config).get("epochs", default))


def trial_settings(plan: SweepPlan) -> Any:
    """Return what every trial of the planned sweep shares (a ``TrialSettings``)."""
    from trainables.adapter import TrialSettings
    from trainables.registry import get_trainable_info

    config = plan.config
    return TrialSettings(
        info=get_trainable_info(config.trainable.framework),
        metric=config.metric,
        mode=config.mode,
        checkpoint_every=config.fault_tolerance.checkpoint_every,
        resolve=plan.resolve,
    )


def build_tuner(plan: SweepPlan, data: SweepData, callbacks: list[Any]) -> Any:
    """Assemble the Tuner: trainable with resources, searcher, scheduler, storage, failures."""
    from ray import tune

    from trainables.adapter import make_trial_function

    # Tune's newer console reporter prints its tables even at verbose=0; the classic one is silent
    # there, and our own LiveProgress view reports progress instead.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Short trials that keep N checkpoints each force a state snapshot per checkpoint, and Tune
    # warns about it every time; on a small sweep that is expected and costs milliseconds.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    config = plan.config
    function = make_trial_function(trial_settings(plan))
    trainable = tune.with_resources(
        tune.with_parameters(function, data=data),
        {"cpu": config.resources.cpu, "gpu": config.resources.gpu},
    )
    tune_config = tune.TuneConfig(
        metric=config.metric,
        mode=config.mode,
        search_alg=plan.searcher,
        scheduler=plan.scheduler,
        num_samples=plan.num_samples,
        # The random/grid generator takes its limit itself (registry); Tune would ignore it.
        max_concurrent_trials=None
        if plan.method in ("random", "grid")
        else config.search.max_concurrent,
        time_budget_s=config.search.time_budget_s,
        # Function trainables pay ~2 s of actor start-up per trial without this (ENVIRONMENT.md).
        reuse_actors=True,
    )
    run_config = tune.RunConfig(
        name=f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        storage_path=str(config.storage.path),
        failure_config=tune.FailureConfig(max_failures=config.fault_tolerance.max_failures),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=_checkpoints_to_keep(plan),
            checkpoint_score_attribute=config.metric,
            checkpoint_score_order=config.mode,
        ),
        callbacks=callbacks,
        verbose=0,
    )
    return tune.Tuner(
        trainable, param_space=plan.param_space, tune_config=tune_config, run_config=run_config
    )


def _checkpoints_to_keep(plan: SweepPlan) -> int:
    """Checkpoints kept per trial; PBT needs more, or one it wants to exploit may be gone."""
    keep = plan.config.fault_tolerance.checkpoints_to_keep
    return max(keep, 4) if plan.scheduler_name == "pbt" else keep


def _tags(plan: SweepPlan, data: SweepData) -> dict[str, str]:
    config = plan.config
    return {
        "tunepipe.searcher": plan.method,
        "tunepipe.scheduler": plan.scheduler_name,
        "tunepipe.framework": config.trainable.framework,
        "tunepipe.metric": config.metric,
        "tunepipe.mode": config.mode,
        "tunepipe.data_fingerprint": data.fingerprint,
        "tunepipe.data_modality": data.modality,
        "tunepipe.searched": ",".join(
            n for n, spec in plan.space.params.items() if spec.type != "constant"
        ),
        # "hit": this sweep reused preprocessing from an earlier one (pipelines.data.cache).
        "tunepipe.data_cache": "hit" if data.cache_hit else "miss",
    }


def _finish(
    plan: SweepPlan,
    data: SweepData,
    grid: Any,
    sweep: SweepRun,
    tracker: MlflowTrialCallback,
    elapsed: float,
    previous: PreviousBest | None = None,
) -> SweepSummary:
    config = plan.config
    reasons = count_end_reasons(grid, tracker.end_reasons)
    sweep.log_metrics({f"trials_{k}": v for k, v in reasons.items()} | {"elapsed_s": elapsed})
    best = select_best(grid, config.metric, config.mode, plan.resolve)
    if best is None and previous is None:
        sweep.set_tags({"tunepipe.outcome": "no trial produced a finite metric"})
        sweep.end("FAILED")
        raise SweepFailed("no trial of the sweep produced a finite metric; see MLflow for why")
    improved = best is not None and is_better(
        best.value, previous.value if previous else None, config.mode
    )
    if improved:
        assert best is not None
        version = _record_best(plan, data, best, sweep, tracker)
        kept = best
    else:
        # An extension that found nothing better: the sweep's best stands, and its best-so-far
        # history gets a point that says so.
        assert previous is not None
        name = f"best_{config.metric}"
        sweep.log_metrics({name: previous.value}, step=sweep.next_step(name))
        version = previous.model_version
        kept = BestTrial(previous.trial_id, previous.config, previous.value, previous.epoch, None)
    log_sweep_plots(config.tracking.uri, sweep.run_id or "")
    sweep.end("FINISHED")
    return SweepSummary(
        experiment_name=config.experiment_name,
        metric=config.metric,
        mode=config.mode,
        best_config=kept.config,
        best_metric=kept.value,
        best_trial_id=kept.trial_id,
        best_epoch=kept.epoch,
        best_checkpoint=str(kept.checkpoint_dir) if kept.checkpoint_dir else None,
        mlflow_parent_run_id=sweep.run_id or "",
        mlflow_tracking_uri=config.tracking.uri,
        mlflow_experiment_id=sweep.experiment_id,
        model_version=version,
        end_reasons=reasons,
        searched=tuple(n for n, spec in plan.space.params.items() if spec.type != "constant"),
        storage_path=str(grid.experiment_path),
        elapsed_s=elapsed,
        results=grid,
        new_best=improved,
    )


def log_sweep_plots(tracking_uri: str, run_id: str) -> None:
    """Draw the sweep's plots from what MLflow recorded and attach them to the parent run.

    The plots are a view of the sweep, not part of its result: a failure to draw one is logged
    and never fails a sweep that has already found and registered its best model.
    """
    from mlflow.tracking import MlflowClient

    from pipelines.sweep_history import load_sweep_history

    try:
        from pipelines.plots import write_plots  # matplotlib loads only when a sweep ends

        client = MlflowClient(tracking_uri)
        history = load_sweep_history(client, run_id)
        with tempfile.TemporaryDirectory(prefix="tunepipe-plots-") as folder:
            write_plots(history, Path(folder))
            client.log_artifacts(run_id, folder, artifact_path="plots")
    except Exception as exc:  # any plotting failure is only a warning
        logger.warning("could not draw the sweep's plots: %s", exc)


def _record_best(
    plan: SweepPlan, data: SweepData, best: BestTrial, sweep: SweepRun, tracker: Any
) -> str | None:
    config = plan.config
    tags = {
        "tunepipe.best_trial_id": best.trial_id,
        "tunepipe.best_epoch": str(best.epoch),
        "tunepipe.best_child_run_id": tracker.run_ids.get(best.trial_id, ""),
    }
    sweep.log_best(best.config, config.metric, best.value, tags, best.checkpoint_dir)
    if not (config.tracking.register_model and best.checkpoint_dir):
        return None
    x_val, _ = data.val_arrays()
    version = register_best_model(
        tracking_uri=config.tracking.uri,
        run_id=sweep.run_id or "",
        model_name=config.experiment_name,
        framework=config.trainable.framework,
        hparams=best.config,
        spec=data.spec,
        checkpoint_dir=best.checkpoint_dir,
        input_example=x_val[:8],
    )
    sweep.set_tags({"tunepipe.model_version": version})
    return version
