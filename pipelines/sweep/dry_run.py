"""``tunepipe validate``, and the check before a sweep of the user's own code: one real step.

Loads the real data (no Ray needed), builds the trainable with one sample of the search space,
trains on one batch and evaluates on the validation rows (a training function runs until its
first report), and checks that the configured metric is reported and finite. Catches what
static checks cannot: a model that does not fit the data's shape, a builder that raises or
returns the wrong type, a metric that is never produced.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

from pipelines.augment import policy_from_hparams
from pipelines.config import ExperimentConfig
from pipelines.data import Prepared, StreamFit, prepare_source
from pipelines.data.local import LocalBatches
from pipelines.data.stream_sweep import sample_prepared
from pipelines.errors import ConfigError, FailedTrialError, UserInputError
from pipelines.sweep.plan import SweepPlan, plan_sweep
from pipelines.tracking.saved_models import save_model
from trainables import reporting
from trainables.errors import UserCodeError
from trainables.function_trainable import TrialContext, run_training_function
from trainables.metrics import trainable_metrics
from trainables.user_code import TARGET_KEY, short_error

#: Rows a dry run trains on when the batch is smaller (a training function sees this many).
DRY_RUN_ROWS = 512


def dry_run(config: ExperimentConfig, target: Any = None) -> dict[str, float]:
    """Validate ``config`` and run one training step; return the metrics it reported.

    Args:
        config: The experiment config.
        target: The user's trainable passed from Python, if any (see ``run_sweep``).

    Raises:
        UserInputError: For invalid input, including a metric the trainable does not report.

    """
    plan = plan_sweep(config, target)
    prepared, _ = prepare_source(config.data)
    return dry_step(plan, prepared)


def dry_step(plan: SweepPlan, prepared: Prepared | StreamFit) -> dict[str, float]:
    """Run one real training step of the planned trainable on the prepared data.

    Streamed data gives the step its first rows only.

    Raises:
        UserInputError: When the step fails on the user's input or code, or the sweep's metric
            is not reported or not finite.

    """
    config = plan.config
    hparams = sample_hparams(plan)
    rows = max(int(hparams.get("batch_size", 1)), DRY_RUN_ROWS)
    if isinstance(prepared, StreamFit):
        prepared = sample_prepared(prepared, rows)
    batches = LocalBatches(prepared, policy_from_hparams(hparams, prepared.modality), rows)
    try:
        metrics = _step(plan, hparams, batches, prepared)
    except UserInputError:
        raise
    except Exception as exc:  # FailedTrialError too: on the first step it fails every trial
        if not plan.info.user_code and not isinstance(exc, FailedTrialError):
            raise  # a bug of ours: a traceback, not a user error
        raise UserCodeError(
            f"the trainable failed in its first step: {short_error(exc)}",
            key=TARGET_KEY,
            fix="run it on the data by hand, or check the hyperparameters it reads",
        ) from exc
    value = metrics.get(config.metric)
    if value is None:
        error = UserCodeError if plan.info.user_code else ConfigError
        raise error(
            f"the trainable did not report {config.metric!r} (it reported {sorted(metrics)})",
            source=config.source,
            key="metric",
            fix=f"use one of: {', '.join(sorted(metrics))}",
        )
    if not math.isfinite(value):
        raise ConfigError(
            f"{config.metric} was {value} after one step with {hparams}",
            source=config.source,
            key="trainable.search_space",
            fix="check the learning-rate range",
        )
    return metrics


def _step(
    plan: SweepPlan, hparams: dict[str, Any], batches: LocalBatches, prepared: Prepared
) -> dict[str, Any]:
    spec = prepared.spec()
    extra = None
    if plan.extra_metrics is not None:
        extra = dataclasses.replace(plan.extra_metrics, target_std=spec.target_std)
    if plan.info.own_loop:
        ctx = TrialContext(
            hparams,
            batches,
            spec,
            metric=plan.config.metric,
            extra_metrics=extra,
            save_model=save_model,
            report=_save_to_scratch,  # the checkpoint (and model) are written, then dropped
            stop_after=1,
        )
        with reporting.offline(cpus=1, trial_index=0):  # outside Tune: nothing to resume
            run_training_function(plan.info.load_function(), hparams, ctx)
        return dict(ctx.reports[0])
    trainable = plan.info.instantiate()
    trainable.setup(hparams, spec, "cpu")
    batch_size = int(hparams["batch_size"])
    metrics = dict(trainable.train_epoch(list(batches.train_batches(1, batch_size))[:1]))
    metrics.update(trainable.evaluate(batches.val_batches()))
    if extra is not None:
        metrics.update(trainable_metrics(trainable, extra, batches.val_batches()))
    return metrics


def _save_to_scratch(values: dict[str, Any], save: Any = None) -> None:
    """Write a dry run's checkpoint (and model) into a scratch folder: it must save cleanly."""
    if save is not None:
        with tempfile.TemporaryDirectory(prefix="tunepipe-dry-run-") as folder:
            save(Path(folder))


def sample_hparams(plan: SweepPlan) -> dict[str, Any]:
    """Return one concrete hyperparameter set: fixed values plus a default of each searched one."""
    fixed = {k: v for k, v in plan.param_space.items() if k not in plan.space.names()}
    return {**fixed, **plan.space.sample_defaults()}
