"""Running a sweep end to end: :func:`run_sweep`.

Order matters, and each step runs once: everything that can be wrong with the user's input is
checked first (:func:`~pipelines.sweep.plan.plan_sweep`), the data is prepared in the driver
(bad data fails here, still before any cluster work), an extension's earlier sweep is read and
checked, then Ray is reached, and only then is anything written to MLflow, so a rejected sweep
leaves no trace there.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from pipelines.config import ExperimentConfig
from pipelines.data import Prepared, StreamFit, SweepData, materialise, prepare_source
from pipelines.paths import ensure_home
from pipelines.sweep.cluster import (
    check_resources,
    ray_session,
    release_placement_groups,
    train_placement_groups,
)
from pipelines.sweep.dry_run import dry_step
from pipelines.sweep.extend import SweepToExtend, prepare_extension
from pipelines.sweep.finish import SweepFailed, SweepSummary, finish_sweep
from pipelines.sweep.inputs import sweep_config
from pipelines.sweep.plan import SweepPlan, plan_sweep
from pipelines.sweep.resume import (
    SweepAlreadyFinished,
    SweepToResume,
    find_sweep_to_resume,
    restore_tuner,
    restored_callback,
)
from pipelines.sweep.signals import StopRequest, SweepInterrupted, graceful_stop
from pipelines.sweep.storage import join, preflight, storage_uri
from pipelines.sweep.tuner import (
    build_trainable,
    build_tuner,
    cluster_resources,
    experiment_name,
    max_concurrent_trials,
)
from pipelines.sweep.warm_start import WarmStart
from pipelines.tracking import schema
from pipelines.tracking.callback import MlflowTrialCallback
from pipelines.tracking.record import SweepRecord, code_version, package_versions
from pipelines.tracking.spool import sync_stopped_drivers
from pipelines.tracking.sweep_run import SweepRun
from trainables.reporting import remove_leftovers

__all__ = [
    "SweepAlreadyFinished",
    "SweepFailed",
    "SweepInterrupted",
    "SweepSummary",
    "execute_sweep",
    "planned_epochs",
    "run_sweep",
]


def run_sweep(
    config: str | Path | Mapping[str, Any] | ExperimentConfig,
    overrides: dict[str, Any] | None = None,
    *,
    trainable: Any = None,
    search_space: Mapping[str, Any] | None = None,
    data: Any = None,
    address: str | None = None,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
    extend: str | None = None,
    resume: str | bool | None = None,
    warm_start: WarmStart | None = None,
    tags: Mapping[str, str] | None = None,
) -> SweepSummary:
    """Run a hyperparameter sweep and record it in MLflow.

    Args:
        config: Path of an experiment YAML file, the same as a dict, or a loaded config.
        overrides: Dotted keys to replace, e.g. ``{"search.num_samples": 8}``.
        trainable: The user's own trainable as a Python object (a model builder, a training
            function or a trainable class; see :mod:`trainables.targets`), in place of
            ``trainable.target``.
        search_space: The search space as a dict, in the vocabulary of the YAML files.
        data: The data in memory: ``(x, y)`` arrays, a dict of them, a pandas DataFrame or a
            ``ray.data.Dataset`` (see :mod:`pipelines.sweep.inputs`).
        address: Ray cluster to use (else ``RAY_ADDRESS``, else a private local instance).
        callbacks: Extra Ray Tune callbacks.
        progress: Show a live progress view in the terminal.
        extend: Parent run id of an earlier sweep to add ``search.num_samples`` trials to
            (:mod:`pipelines.sweep.extend`); its searcher continues from the sweep's trials.
        resume: Continue an interrupted sweep (:mod:`pipelines.sweep.resume`): its parent run
            id, or True for the experiment's newest sweep. The same MLflow runs continue.
        warm_start: Earlier results for the searcher (:mod:`pipelines.sweep.warm_start`).
        tags: Extra tags for the sweep's parent run.

    Returns:
        The summary of the finished sweep (for an extension: the sweep's best so far).

    Raises:
        UserInputError: For invalid config, search space or data, before any cluster work.
        SweepFailed: When no trial produced a finite metric.
        SweepInterrupted: When SIGINT or SIGTERM stopped the sweep (it can be resumed).
        SweepAlreadyFinished: When ``resume`` names a sweep that has finished.

    """
    config = sweep_config(config, overrides, search_space=search_space, data=data)
    plan = plan_sweep(config, trainable)
    ensure_home()  # 0700 before the cache, the store or Tune's results are written into it
    prepared, cache_hit = prepare_source(config.data)
    if plan.info.user_code:
        # The user's code is unknown until it runs: one real step now, before any cluster
        # work, turns a broken builder or a metric never reported into a one-line error.
        dry_step(plan, prepared)
    return execute_sweep(
        plan,
        prepared,
        cache_hit=cache_hit,
        address=address,
        callbacks=callbacks,
        progress=progress,
        extend=extend,
        resume=resume,
        warm_start=warm_start,
        tags=tags,
    )


def execute_sweep(
    plan: SweepPlan,
    prepared: Prepared | StreamFit,
    *,
    cache_hit: bool = False,
    address: str | None = None,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
    extend: str | None = None,
    resume: str | bool | None = None,
    warm_start: WarmStart | None = None,
    tags: Mapping[str, str] | None = None,
) -> SweepSummary:
    """Run an already planned sweep on already prepared data (see :func:`run_sweep`).

    For callers that plan and prepare themselves (retraining): nothing is planned or prepared
    twice.
    """
    config = plan.config
    # Writes a driver that stopped left in its spool go first: what follows reads MLflow.
    sync_stopped_drivers(config.tracking.uri)
    base: SweepToExtend | None = None
    interrupted: SweepToResume | None = None
    if resume:
        interrupted = find_sweep_to_resume(
            config, None if resume is True else str(resume), prepared.fingerprint()
        )
    elif extend is not None:
        base, warm_start = prepare_extension(config, extend, plan.space, prepared.fingerprint())
    started = time.monotonic()
    with ray_session(address, config.runtime.ray_runtime_env()):
        check_resources(config.resources)
        # Built once Ray runs: data-parallel trials take their concurrency from the cluster.
        searcher, scheduler = plan.build_strategies(
            warm_start, max_concurrent_trials(plan, cluster_resources())
        )
        if plan.scheduler.uses_python_random and config.search.seed is not None:
            random.seed(config.search.seed)
        storage = storage_uri(config.storage)
        preflight(storage)
        data = materialise(
            prepared,
            cache_hit=cache_hit,
            cpus_per_trial=max(1, int(config.resources.cpu)),
            augment_device=config.data.augment_device,
        )
        sweep = SweepRun(config.tracking.uri, config.experiment_name)
        try:
            return _run_tracked(
                plan, data, sweep, searcher, scheduler, storage, started, interrupted, base,
                warm_start=warm_start, callbacks=callbacks, progress=progress, tags=tags,
            )  # fmt: skip
        finally:
            sweep.close()  # a no-op after a finished sweep; else what is spooled stays on disk


def _run_tracked(
    plan: SweepPlan,
    data: SweepData,
    sweep: SweepRun,
    searcher: Any,
    scheduler: Any,
    storage: str,
    started: float,
    interrupted: SweepToResume | None,
    base: SweepToExtend | None,
    *,
    warm_start: WarmStart | None,
    callbacks: Sequence[Any],
    progress: bool,
    tags: Mapping[str, str] | None,
) -> SweepSummary:
    """Open (or reopen) the parent run, build or restore the tuner, run it, close the sweep."""
    config = plan.config
    sweep.mark_orphans()
    run_tags = {**_tags(plan, data), **(tags or {})}
    if warm_start is not None:
        run_tags[schema.WARM_START_TRIALS] = str(len(warm_start.trials))
    if interrupted is not None:
        parent = sweep.resume(interrupted.run_id)
        sweep.set_tags({schema.RESUMES: str(interrupted.resumes + 1)})
    elif base is None:
        parent = sweep.start(config.to_dict(), config.trainable.search_space, run_tags)
    else:
        parent = sweep.resume(base.run_id)
        sweep.set_tags({**run_tags, schema.EXTENSIONS: str(base.extensions + 1)})
    if interrupted is not None and interrupted.restorable:
        tuner = restore_tuner(interrupted.experiment_uri, build_trainable(plan, data))
        tracker = restored_callback(tuner, MlflowTrialCallback)
        tracker.attach(sweep.spool, parent)
        return _fit_and_finish(plan, data, tuner, sweep, tracker, started, base)
    record = SweepRecord(
        config.to_dict(),
        code_version(),
        package_versions(plan.info.packages),
        data.fingerprint,
        trainable=plan.info.reference(),
        search_path=plan.info.search_path,
    )
    tracker = MlflowTrialCallback(
        config.tracking.uri,
        config.experiment_name,
        parent,
        list(plan.space.names()),
        plan.resolve,
        record=record,
        trial_offset=base.trials if base is not None else 0,
        once_per_step=not plan.scheduler.mutates_hparams,
    )
    tracker.attach(sweep.spool, parent)
    if interrupted is not None:
        # Its trials start again (the driver died before Tune's first snapshot): any run
        # of theirs is found, not created twice.
        tracker.set_state({})
    extra = [*callbacks]
    if progress:
        from pipelines.sweep.progress import LiveProgress

        planned = partial(planned_epochs, plan.resolve, plan.max_epochs)
        extra.append(
            LiveProgress(config.metric, config.mode, plan.num_samples, planned_epochs=planned)
        )
    name = experiment_name(plan)
    tuner = build_tuner(plan, data, searcher, scheduler, [tracker, *extra], name=name)
    sweep.set_tags({schema.TUNE_EXPERIMENT: join(storage, name)})
    return _fit_and_finish(plan, data, tuner, sweep, tracker, started, base)


def _fit_and_finish(
    plan: SweepPlan,
    data: SweepData,
    tuner: Any,
    sweep: SweepRun,
    tracker: MlflowTrialCallback,
    started: float,
    base: SweepToExtend | None,
) -> SweepSummary:
    """Run Tune, then close the sweep: finished, or interrupted by a signal (resumable)."""
    try:
        with graceful_stop() as stop:
            grid = tuner.fit()
    except BaseException:
        sweep.end("KILLED")
        raise
    finally:
        # Temporary folders of trial attempts killed on this machine (their process could not).
        remove_leftovers(tracker.trial_ids)
    release_placement_groups(train_placement_groups(grid))
    if stop.signum is not None:
        _close_interrupted(plan, sweep, tracker, stop)
    previous = base.best if base is not None else None
    elapsed = time.monotonic() - started
    return finish_sweep(plan, data, grid, sweep, tracker, elapsed, previous)


def _close_interrupted(
    plan: SweepPlan, sweep: SweepRun, tracker: MlflowTrialCallback, stop: StopRequest
) -> None:
    """Close the runs of a sweep a signal stopped, as KILLED with the reason, and raise."""
    # The run's id; while MLflow has not taken the run yet, its key (--resume takes both).
    run_id = sweep.run_id or sweep.ref or ""
    source = str(plan.config.source) if plan.config.source else "CONFIG"
    detail = (
        f"stopped by {stop.name}; the trials stopped at their last checkpoint: continue with "
        f"`tunepipe sweep {source} --resume {run_id}`"
    )
    tracker.close_interrupted(detail)
    sweep.interrupted(detail)
    raise SweepInterrupted(run_id, stop, detail)


def planned_epochs(
    resolve: Callable[[Mapping[str, Any]], dict[str, Any]],
    default: int,
    trial_config: Mapping[str, Any],
) -> int:
    """Return how many epochs a trial was set to run (its ``epochs`` hyperparameter)."""
    return int(resolve(trial_config).get("epochs", default))


def _tags(plan: SweepPlan, data: SweepData) -> dict[str, str]:
    config = plan.config
    return {
        schema.SEARCHER: plan.searcher.name,
        schema.SCHEDULER: plan.scheduler.name,
        schema.FRAMEWORK: plan.info.framework,
        schema.METRIC: config.metric,
        schema.MODE: config.mode,
        schema.DATA_FINGERPRINT: data.fingerprint,
        schema.DATA_MODALITY: data.modality,
        schema.SEARCHED: ",".join(plan.searched),
        # "hit": this sweep reused preprocessing from an earlier one (pipelines.data.cache).
        schema.DATA_CACHE: "hit" if data.cache_hit else "miss",
    }
