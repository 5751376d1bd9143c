"""Assembling Ray Tune's Tuner from a planned sweep: trainable, strategies, storage, failures."""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

from pipelines.sweep.cluster import DRIVER_CPU
from pipelines.sweep.plan import SweepPlan
from pipelines.sweep.storage import storage_uri
from pipelines.tracking.saved_models import save_model
from trainables.adapter import TrialSettings, make_trial_function
from trainables.protocol import BatchSource


def trial_settings(plan: SweepPlan) -> TrialSettings:
    """Return what every trial of the planned sweep shares besides its hyperparameters."""
    config = plan.config
    return TrialSettings(
        info=plan.info,
        metric=config.metric,
        mode=config.mode,
        checkpoint_every=config.fault_tolerance.checkpoint_every,
        resolve=plan.resolve,
        extra_metrics=plan.extra_metrics,
        save_model=save_model if plan.info.own_loop else None,
        workers=config.resources.workers,
        cpu_per_worker=config.resources.cpu,
        gpu_per_worker=config.resources.gpu,
        worker_failures=config.fault_tolerance.max_failures,
    )


def checkpoints_to_keep(plan: SweepPlan) -> int:
    """Return the checkpoints kept per trial: the config's, or more if the scheduler needs them."""
    return max(plan.config.fault_tolerance.checkpoints_to_keep, plan.scheduler.min_checkpoints)


def experiment_name(plan: SweepPlan) -> str:
    """Return a new name for the sweep's Tune experiment (its folder in the storage)."""
    return f"{plan.config.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_trainable(plan: SweepPlan, data: BatchSource) -> Any:
    """Return Tune's trainable for ``plan``: the trial function, its data and its resources.

    A restored sweep gets it anew (``Tuner.restore`` cannot unpickle the data's object ref).
    """
    from ray import tune

    # Tune's newer console reporter prints its tables even at verbose=0; the classic one is silent
    # there, and our own LiveProgress view reports progress instead.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Short trials that keep N checkpoints each force a state snapshot per checkpoint, and Tune
    # warns about it every time; on a small sweep that is expected and costs milliseconds.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    settings = trial_settings(plan)
    if settings.workers > 1:
        # Imported only here: they load Ray Train and the framework's distributed runtime.
        if settings.info.framework == "tensorflow":
            from trainables.keras_data_parallel import data_parallel_trial_function
        else:
            from trainables.torch_data_parallel import data_parallel_trial_function

        function = data_parallel_trial_function(settings)
    else:
        function = make_trial_function(settings)
    return tune.with_resources(tune.with_parameters(function, data=data), trial_request(plan))


def trial_request(plan: SweepPlan) -> Any:
    """Return what Tune reserves for one trial.

    A data-parallel trial is a thin driver (its Ray Train workers reserve their own CPUs and
    GPUs); it asks for a sliver of a CPU because Ray refuses a request of zero. With
    ``resources.node_labels`` the trial's placement group carries them as its label selector
    (Tune passes the factory's keyword arguments to ``placement_group()``).
    """
    from ray import tune

    resources = plan.config.resources
    if resources.workers > 1:
        return {"cpu": DRIVER_CPU}
    if resources.node_labels:
        bundle = {"CPU": resources.cpu}
        if resources.gpu:
            bundle["GPU"] = resources.gpu
        return tune.PlacementGroupFactory(
            [bundle], bundle_label_selector=[dict(resources.node_labels)]
        )
    return {"cpu": resources.cpu, "gpu": resources.gpu}


def max_concurrent_trials(plan: SweepPlan, cluster: dict[str, float]) -> int | None:
    """Return Tune's cap on trials in flight: the config's, or what the cluster can host.

    Data-parallel trials need it: Tune starts a trial as soon as its thin driver fits, and a
    Train run whose workers never fit waits for them forever (a sweep that looks hung). With
    ``cluster`` the whole cluster's ``CPU``/``GPU`` totals (an autoscaling cluster's grow, so
    its cap is its current size: more trials start as nodes join only with a config limit).
    """
    resources = plan.config.resources
    limit = plan.config.search.max_concurrent
    if resources.workers <= 1:
        return limit
    fits = [cluster.get("CPU", 0.0) / (resources.workers * resources.cpu + DRIVER_CPU)]
    if resources.gpu > 0:
        fits.append(cluster.get("GPU", 0.0) / (resources.workers * resources.gpu))
    room = max(1, int(min(fits) + 1e-9))
    return room if limit is None else min(limit, room)


def build_tuner(
    plan: SweepPlan,
    data: BatchSource,
    searcher: Any,
    scheduler: Any,
    callbacks: list[Any],
    name: str | None = None,
) -> Any:
    """Assemble the Tuner for ``plan`` with Ray's ``searcher`` and ``scheduler`` objects.

    ``name`` is the Tune experiment's folder in the storage (default: :func:`experiment_name`).
    """
    from ray import tune

    config = plan.config
    trainable = build_trainable(plan, data)
    if config.resources.workers > 1:  # no reuse on purpose (below): Tune's advice is noise here
        warnings.filterwarnings("ignore", message="Consider boosting PBT performance")
    tune_config = tune.TuneConfig(
        metric=config.metric,
        mode=config.mode,
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=plan.num_samples,
        # A searcher that caps concurrency itself takes the limit (strategies); Tune's own limit
        # would be ignored by it.
        max_concurrent_trials=None
        if plan.searcher.caps_concurrency
        else max_concurrent_trials(plan, cluster_resources()),
        time_budget_s=config.search.time_budget_s,
        # Function trainables pay ~2 s of actor start-up per trial without this (ENVIRONMENT.md).
        # Not for data-parallel trials: Tune keeps a paused trial's actor for reuse without
        # stopping it, so its Train run would keep the workers' CPUs and GPUs that the trials
        # it waits for (synchronous PBT) need: a deadlock, seen on 2 CPUs. Their start-up is
        # the Train run's anyway (~10 s); 2 s more per trial is the price of a stop.
        reuse_actors=config.resources.workers <= 1,
    )
    run_config = tune.RunConfig(
        name=name or experiment_name(plan),
        storage_path=storage_uri(config.storage),
        failure_config=tune.FailureConfig(max_failures=config.fault_tolerance.max_failures),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=checkpoints_to_keep(plan),
            checkpoint_score_attribute=config.metric,
            checkpoint_score_order=config.mode,
        ),
        callbacks=callbacks,
        verbose=0,
    )
    return tune.Tuner(
        trainable, param_space=plan.param_space, tune_config=tune_config, run_config=run_config
    )


def cluster_resources() -> dict[str, float]:
    """Return the running Ray cluster's total resources (``CPU``, ``GPU``, ...)."""
    import ray

    return {key: float(value) for key, value in ray.cluster_resources().items()}
