"""``tunepipe validate``: check a sweep without running it, by one real training step.

Loads the real data (no Ray needed), builds the trainable with one sample of the search space,
trains on one batch and evaluates on one batch, and checks that the configured metric is reported
and finite. Catches what static checks cannot: a model that does not fit the data's shape, a
metric that is never produced.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipelines.augment import policy_from_hparams
from pipelines.config import ExperimentConfig
from pipelines.data import prepare_arrays, transform_batch
from pipelines.errors import ConfigError
from pipelines.sweep.plan import SweepPlan, plan_sweep


def dry_run(config: ExperimentConfig) -> dict[str, float]:
    """Validate ``config`` and run one training step; return the metrics it reported.

    Raises:
        UserInputError: For invalid input, including a metric the trainable does not report.

    """
    plan = plan_sweep(config)
    prepared, _ = prepare_arrays(config.data)
    hparams = sample_hparams(plan)
    trainable = plan.info.load_class()()
    trainable.setup(hparams, prepared.spec(), "cpu")
    rows = int(hparams["batch_size"])
    # The training batch goes through the trial's augmentation and featurising, as in a sweep.
    batch = transform_batch(
        {"x": prepared.x_train[:rows], "y": prepared.y_train[:rows], "idx": np.arange(rows)},
        policy=policy_from_hparams(hparams, prepared.modality),
        featurizer=prepared.featurizer,
        seed=0,
        trial=0,
        epoch=1,
        synonyms=prepared.synonym_table(),
    )
    metrics = dict(trainable.train_epoch([batch]))
    metrics.update(trainable.evaluate([{"x": prepared.x_val[:rows], "y": prepared.y_val[:rows]}]))
    value = metrics.get(config.metric)
    if value is None:
        raise ConfigError(
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


def sample_hparams(plan: SweepPlan) -> dict[str, Any]:
    """Return one concrete hyperparameter set: fixed values plus a default of each searched one."""
    fixed = {k: v for k, v in plan.param_space.items() if k not in plan.space.names()}
    return {**fixed, **plan.space.sample_defaults()}
