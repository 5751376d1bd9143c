"""Rules that span config sections, checked before any cluster work starts.

:func:`plan_sweep` turns a loaded :class:`~pipelines.config.ExperimentConfig` into a
:class:`SweepPlan` (search space, Tune parameter space, searcher, scheduler) or raises a one-line
:class:`~pipelines.errors.UserInputError`. Nothing here starts Ray or writes to MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines import registry
from pipelines.augment import ImageAugment
from pipelines.config import ExperimentConfig
from pipelines.data import check_data_source, dataset_task
from pipelines.errors import ConfigError, UserInputError
from search_spaces import SearchSpace, load_search_space
from trainables.registry import TRAINABLES, TrainableInfo

REQUIRED_HPARAMS = ("epochs", "batch_size")


@dataclass(frozen=True)
class SweepPlan:
    """Everything needed to assemble the Tuner, derived and checked from the config."""

    config: ExperimentConfig
    space: SearchSpace
    param_space: dict[str, Any]
    max_epochs: int
    task: str
    searcher: Any
    scheduler: Any


def plan_sweep(config: ExperimentConfig) -> SweepPlan:
    """Check every cross-section rule and build the sweep's pieces.

    Raises:
        UserInputError: Naming the config file and key, for the first rule broken.

    """
    try:
        return _plan(config)
    except UserInputError as exc:
        if exc.source is None and config.source is not None:
            raise exc.with_source(config.source) from None
        raise


def _plan(config: ExperimentConfig) -> SweepPlan:
    info = _trainable_info(config)
    space = load_search_space(config.trainable.search_space)
    _check_hparams(config, info, space)
    check_data_source(config.data)
    task = dataset_task(config.data)
    _check_metric(config, info, task)
    ImageAugment.from_hparams(dict(config.trainable.params))

    max_epochs = _max_epochs(config, space)
    ctx = registry.StrategyContext(
        metric=config.metric,
        mode=config.mode,
        seed=config.search.seed,
        max_epochs=max_epochs,
    )
    searcher = registry.build(
        registry.SEARCHERS, config.search.method, config.search.options, ctx, key="search.method"
    )
    scheduler = registry.build(
        registry.SCHEDULERS, config.scheduler.name, config.scheduler.options, ctx, key="scheduler"
    )
    fixed: dict[str, Any] = {"model": config.trainable.model, "seed": config.search.seed or 0}
    fixed.update(config.trainable.params)
    param_space = {**fixed, **space.to_tune(config.search.method)}
    return SweepPlan(config, space, param_space, max_epochs, task, searcher, scheduler)


def _trainable_info(config: ExperimentConfig) -> TrainableInfo:
    framework = config.trainable.framework
    if framework not in TRAINABLES:
        raise ConfigError(
            f"unknown framework {framework!r}",
            key="trainable.framework",
            fix=f"use one of: {', '.join(TRAINABLES)}",
        )
    info = TRAINABLES[framework]
    if config.trainable.model not in info.models:
        raise ConfigError(
            f"unknown {framework} model {config.trainable.model!r}",
            key="trainable.model",
            fix=f"use one of: {', '.join(info.models)}",
        )
    return info


def _check_hparams(config: ExperimentConfig, info: TrainableInfo, space: SearchSpace) -> None:
    fixed = set(config.trainable.params)
    searched = set(space.names())
    both = sorted(fixed & searched)
    if both:
        raise ConfigError(
            f"{both[0]!r} is both fixed here and searched in {space.source}",
            key=f"trainable.params.{both[0]}",
            fix="remove it from one of the two",
        )
    unknown = sorted((fixed | searched) - info.accepted_hparams() - {"model"})
    if unknown:
        raise ConfigError(
            f"the {info.framework} trainable has no hyperparameter {unknown[0]!r}",
            key=f"trainable.params.{unknown[0]}"
            if unknown[0] in fixed
            else "trainable.search_space",
            fix=f"use one of: {', '.join(sorted(info.accepted_hparams()))}",
        )
    for name in REQUIRED_HPARAMS:
        if name not in fixed | searched:
            raise ConfigError(
                f"hyperparameter {name!r} is not set",
                key=f"trainable.params.{name}",
                fix=f"set trainable.params.{name} or search over it",
            )


def _check_metric(config: ExperimentConfig, info: TrainableInfo, task: str) -> None:
    reported = info.metrics.get(task, ())
    if config.metric not in reported:
        raise ConfigError(
            f"the {info.framework} trainable never reports {config.metric!r} for {task}",
            key="metric",
            fix=f"use one of: {', '.join(reported)}",
        )


def _max_epochs(config: ExperimentConfig, space: SearchSpace) -> int:
    """Return the most epochs any trial can run (the scheduler's horizon)."""
    if "epochs" in config.trainable.params:
        return int(config.trainable.params["epochs"])
    spec = space.params["epochs"]
    for attribute in ("high", "value"):
        if hasattr(spec, attribute):
            return int(getattr(spec, attribute))
    return int(max(getattr(spec, "values")))  # noqa: B009 - categorical or grid spec
