"""Rules that span config sections, checked before any cluster work starts.

:func:`plan_sweep` turns a loaded :class:`~pipelines.config.ExperimentConfig` into a
:class:`SweepPlan` (search space, Tune parameter space, searcher, scheduler) or raises a one-line
:class:`~pipelines.errors.UserInputError`. Nothing here starts Ray or writes to MLflow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from pipelines import registry
from pipelines.augment.policy import (
    augment_name,
    check_probability,
    check_strength,
    check_transform,
)
from pipelines.config import ExperimentConfig
from pipelines.data import check_data_source, data_modality, dataset_task
from pipelines.errors import ConfigError, UserInputError
from search_spaces import SearchSpace, load_search_space
from search_spaces.convert import SearcherSpace, flatten_sample, searcher_space
from trainables.registry import TRAINABLES, TrainableInfo

REQUIRED_HPARAMS = ("epochs", "batch_size")


@dataclass(frozen=True)
class SweepPlan:
    """Everything needed to assemble the Tuner, derived and checked from the config."""

    config: ExperimentConfig
    space: SearchSpace
    param_space: dict[str, Any]
    num_samples: int
    max_epochs: int
    task: str
    method: str
    scheduler_name: str
    searcher: Any
    scheduler: Any
    resolve: Callable[[Mapping[str, Any]], dict[str, Any]]


def plan_sweep(config: ExperimentConfig, warm_start: Any = None) -> SweepPlan:
    """Check every cross-section rule and build the sweep's pieces.

    Args:
        config: The loaded experiment config.
        warm_start: Earlier results the searcher starts from (a
            :class:`~pipelines.warm_start.WarmStart`), or None for a cold start.

    Raises:
        UserInputError: Naming the config file and key, for the first rule broken.

    """
    try:
        return _plan(config, warm_start)
    except UserInputError as exc:
        if exc.source is None and config.source is not None:
            raise exc.with_source(config.source) from None
        raise


def _plan(config: ExperimentConfig, warm_start: Any = None) -> SweepPlan:
    info = _trainable_info(config)
    space = load_search_space(config.trainable.search_space)
    _check_hparams(config, info, space)
    check_data_source(config.data)
    task = dataset_task(config.data)
    _check_metric(config, info, task)
    augmentation = check_augmentation(config, space, data_modality(config.data))

    _check_combinations(config, space, task)

    method, scheduler_name = _strategy_names(config)
    registry.lookup(registry.SEARCHERS, method, key="search.method")
    converted: SearcherSpace = searcher_space(space, method)
    max_epochs = _max_epochs(config, space)
    ctx = registry.StrategyContext(
        metric=config.metric,
        mode=config.mode,
        seed=warm_start.seed(config.search.seed) if warm_start else config.search.seed,
        max_epochs=max_epochs,
        space=space,
        searcher_space=converted,
        repeats=config.search.num_samples,
        max_concurrent=config.search.max_concurrent,
        warm_start=warm_start,
    )
    searcher = registry.build(
        registry.SEARCHERS, method, config.search.options, ctx, key="search.method"
    )
    scheduler = registry.build(
        registry.SCHEDULERS, scheduler_name, config.scheduler.options, ctx, key="scheduler"
    )
    fixed: dict[str, Any] = {"model": config.trainable.model, "seed": config.search.seed or 0}
    fixed.update(augmentation)
    fixed.update(config.trainable.params)
    num_samples = config.search.num_samples
    if method == "grid":  # num_samples repeats the enumerated grid
        num_samples *= converted.num_points or 1
    return SweepPlan(
        config=config,
        space=space,
        param_space={**fixed, **converted.param_space},
        num_samples=num_samples,
        max_epochs=max_epochs,
        task=task,
        method=method,
        scheduler_name=scheduler_name,
        searcher=searcher,
        scheduler=scheduler,
        resolve=partial(resolve_trial_config, space),
    )


def resolve_trial_config(space: SearchSpace, config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a trial's hyperparameters as trials see them: flat, only active parameters."""
    return space.active(flatten_sample(dict(config)))


def _strategy_names(config: ExperimentConfig) -> tuple[str, str]:
    """Return (searcher, scheduler), expanding a preset into its pair."""
    method, scheduler = config.search.method, config.scheduler.name
    if config.search.preset is not None:
        if config.search.preset not in registry.PRESETS:
            raise ConfigError(
                f"unknown preset {config.search.preset!r}",
                key="search.preset",
                fix=f"use one of: {', '.join(registry.PRESETS)}",
            )
        preset = registry.PRESETS[config.search.preset]
        explicit = [
            (key, value, wanted)
            for key, value, wanted, fields in (
                ("search.method", method, preset[0], config.search.model_fields_set),
                ("scheduler.name", scheduler, preset[1], config.scheduler.model_fields_set),
            )
            if key.split(".")[1] in fields and value != wanted
        ]
        if explicit:
            key, value, wanted = explicit[0]
            raise ConfigError(
                f"preset {config.search.preset!r} uses {wanted!r}, but {value!r} is set",
                key=key,
                fix="remove the key or the preset",
            )
        method, scheduler = preset
    if scheduler in registry.NEEDS_RANDOM_SEARCH and method != "random":
        raise ConfigError(
            f"scheduler {scheduler!r} changes hyperparameters during a trial, which searcher "
            f"{method!r} cannot follow",
            key="search.method",
            fix="use search.method: random with this scheduler",
        )
    return method, scheduler


def _check_combinations(config: ExperimentConfig, space: SearchSpace, task: str) -> None:
    """Reject hyperparameter combinations that cannot mean anything."""
    schedule = config.trainable.params.get("lr_schedule", "constant")
    hypergradient = config.trainable.params.get("hypergradient") is True
    if (hypergradient or "hypergradient" in space.names()) and (
        "lr_schedule" in space.names() or schedule != "constant"
    ):
        raise ConfigError(
            "hypergradient descent sets the learning rate itself; an lr_schedule would fight it",
            key="trainable.params.lr_schedule",
            fix="use lr_schedule: constant (or drop it) with hypergradient",
        )


def check_augmentation(
    config: ExperimentConfig, space: SearchSpace, modality: str
) -> dict[str, float]:
    """Check the augmentation policy and every ``aug_*`` hyperparameter against the data.

    Returns:
        The ``aug_*`` values the ``data.augment`` section fixes for every trial (they travel as
        hyperparameters, so MLflow records them per trial like searched ones).

    Raises:
        ConfigError: For an unknown transform, one for another modality, a strength or
            probability out of range, or a transform without a strength.

    """
    params, searched = config.trainable.params, set(space.names())
    for key in sorted(set(params) | searched):
        name = augment_name(key)
        if name is None:
            continue
        where = f"trainable.params.{key}" if key in params else "trainable.search_space"
        check_transform(name, modality, key=where)
        check = check_probability if key.endswith("_p") and key != f"aug_{name}" else None
        for value in [params[key]] if key in params else _extremes(space.params[key]):
            if check is not None:
                check(name, value, key=where)
            else:
                check_strength(name, value, key=where)
    fixed: dict[str, float] = {}
    for name, step in config.data.augment.items():
        key = f"data.augment.{name}"
        check_transform(name, modality, key=key)
        elsewhere = {f"aug_{name}", f"aug_{name}_p"} & (set(params) | searched)
        if step.strength is not None:
            if f"aug_{name}" in elsewhere:
                raise ConfigError(
                    f"the strength of {name!r} is fixed here and set as aug_{name} too",
                    key=f"{key}.strength",
                    fix="keep one of the two",
                )
            check_strength(name, step.strength, key=f"{key}.strength")
            fixed[f"aug_{name}"] = step.strength
        elif f"aug_{name}" not in elsewhere:
            raise ConfigError(
                f"augmentation {name!r} has no strength",
                key=f"{key}.strength",
                fix=f"set strength, or search aug_{name} in the search space",
            )
        if f"aug_{name}_p" not in elsewhere:
            fixed[f"aug_{name}_p"] = step.p
    return fixed


def _extremes(spec: Any) -> list[Any]:
    """Return the values at the edges of a search-space entry (what a range check needs)."""
    if hasattr(spec, "low") and hasattr(spec, "high"):
        return [spec.low, spec.high]
    if hasattr(spec, "value"):
        return [spec.value]
    return list(getattr(spec, "values", []))


def _trainable_info(config: ExperimentConfig) -> TrainableInfo:
    framework = config.trainable.framework
    if framework not in TRAINABLES:
        raise ConfigError(
            f"unknown framework {framework!r}",
            key="trainable.framework",
            fix=f"use one of: {', '.join(TRAINABLES)}",
        )
    info = TRAINABLES[framework]
    missing = info.missing_modules()
    if missing:  # found now, not as the same ImportError in every trial
        raise ConfigError(
            f"the {framework} trainable needs {', '.join(missing)}, which is not installed",
            key="trainable.framework",
            fix=info.install_hint,
        )
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
