"""The rules a sweep's config must keep across its sections, each a function of its own.

:func:`pipelines.sweep.plan.plan_sweep` runs them in order; each raises a one-line
:class:`~pipelines.errors.ConfigError` naming the key and the fix.
"""

from __future__ import annotations

from pipelines.augment.policy import hparam_keys as augment_hparam_keys
from pipelines.config import ExperimentConfig
from pipelines.errors import ConfigError
from pipelines.sweep import strategies
from pipelines.sweep.strategies import Scheduler, Searcher
from search_spaces import SearchSpace
from trainables.registry import TRAINABLES, TrainableInfo

#: Hyperparameters every sweep must fix or search.
REQUIRED_HPARAMS = ("epochs", "batch_size")


def trainable_info(config: ExperimentConfig) -> TrainableInfo:
    """Return the config's trainable entry, checking it is installed and builds the model.

    Raises:
        ConfigError: For an unknown framework or model, or a framework that is not installed.

    """
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


def check_hparams(config: ExperimentConfig, info: TrainableInfo, space: SearchSpace) -> None:
    """Refuse a hyperparameter both fixed and searched, an unknown one, or a missing one."""
    fixed = set(config.trainable.params)
    searched = set(space.names())
    both = sorted(fixed & searched)
    if both:
        raise ConfigError(
            f"{both[0]!r} is both fixed here and searched in {space.source}",
            key=f"trainable.params.{both[0]}",
            fix="remove it from one of the two",
        )
    accepted = info.accepted_hparams() | augment_hparam_keys()
    unknown = sorted((fixed | searched) - accepted - {"model"})
    if unknown:
        raise ConfigError(
            f"the {info.framework} trainable has no hyperparameter {unknown[0]!r}",
            key=f"trainable.params.{unknown[0]}"
            if unknown[0] in fixed
            else "trainable.search_space",
            fix=f"use one of: {', '.join(sorted(accepted))}",
        )
    for name in REQUIRED_HPARAMS:
        if name not in fixed | searched:
            raise ConfigError(
                f"hyperparameter {name!r} is not set",
                key=f"trainable.params.{name}",
                fix=f"set trainable.params.{name} or search over it",
            )


def check_metric(config: ExperimentConfig, info: TrainableInfo, task: str) -> None:
    """Refuse a metric the trainable never reports for the data's task."""
    reported = info.metrics.get(task, ())
    if config.metric not in reported:
        raise ConfigError(
            f"the {info.framework} trainable never reports {config.metric!r} for {task}",
            key="metric",
            fix=f"use one of: {', '.join(reported)}",
        )


def check_registration(config: ExperimentConfig, info: TrainableInfo) -> None:
    """Refuse to plan a sweep whose best model could not be registered when it ends."""
    if config.tracking.register_model and not info.can_export:
        raise ConfigError(
            f"the {info.framework} trainable cannot log its model to MLflow",
            key="tracking.register_model",
            fix="set tracking.register_model: false",
        )


def max_epochs(config: ExperimentConfig, space: SearchSpace) -> int:
    """Return the most epochs any trial can run (the scheduler's horizon)."""
    if "epochs" in config.trainable.params:
        return int(config.trainable.params["epochs"])
    spec = space.params["epochs"]
    for attribute in ("high", "value"):
        if hasattr(spec, attribute):
            return int(getattr(spec, attribute))
    return int(max(getattr(spec, "values")))  # noqa: B009 - categorical or grid spec


def strategy_names(config: ExperimentConfig) -> tuple[str, str]:
    """Return the names of (searcher, scheduler), expanding a preset into its pair.

    Raises:
        ConfigError: For an unknown preset, or a preset contradicted by an explicit name.

    """
    method, scheduler = config.search.method, config.scheduler.name
    if config.search.preset is not None:
        if config.search.preset not in strategies.PRESETS:
            raise ConfigError(
                f"unknown preset {config.search.preset!r}",
                key="search.preset",
                fix=f"use one of: {', '.join(strategies.PRESETS)}",
            )
        preset = strategies.PRESETS[config.search.preset]
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
    return method, scheduler


def check_strategy_pair(searcher: Searcher, scheduler: Scheduler) -> None:
    """Refuse a scheduler that changes hyperparameters under a searcher that cannot follow."""
    if scheduler.mutates_hparams and not searcher.follows_mutations:
        followers = [s.name for s in strategies.SEARCHERS.values() if s.follows_mutations]
        raise ConfigError(
            f"scheduler {scheduler.name!r} changes hyperparameters during a trial, which "
            f"searcher {searcher.name!r} cannot follow",
            key="search.method",
            fix=f"use search.method: {' or '.join(followers)} with this scheduler",
        )


def check_combinations(config: ExperimentConfig, space: SearchSpace) -> None:
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
