"""Assembling Ray Tune's Tuner from a planned sweep: trainable, strategies, storage, failures."""

from __future__ import annotations

import os
import time
from typing import Any

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
    config = plan.config
    function = make_trial_function(trial_settings(plan))
    return tune.with_resources(
        tune.with_parameters(function, data=data),
        {"cpu": config.resources.cpu, "gpu": config.resources.gpu},
    )


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
        else config.search.max_concurrent,
        time_budget_s=config.search.time_budget_s,
        # Function trainables pay ~2 s of actor start-up per trial without this (ENVIRONMENT.md).
        reuse_actors=True,
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
