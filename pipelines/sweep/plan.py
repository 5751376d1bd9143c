"""Planning a sweep: every rule checked and every piece derived from the config, once.

:func:`plan_sweep` turns a loaded :class:`~pipelines.config.ExperimentConfig` into a
:class:`SweepPlan` (trainable, search space in the searcher's form, Tune parameter space, the
chosen strategies with validated options) or raises a one-line
:class:`~pipelines.errors.UserInputError`. Nothing here starts Ray, reads data or touches
MLflow, and every path (sweep, ``--extend``, retrain, validate, replay) plans exactly once: the
strategies' Ray objects are built from the plan later (:meth:`SweepPlan.build_strategies`), when
any warm start is known.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.augment.checks import check_augmentation
from pipelines.config import ExperimentConfig
from pipelines.data import (
    check_data_source,
    check_streaming,
    check_streaming_trainable,
    data_modality,
    dataset_task,
)
from pipelines.errors import UserInputError
from pipelines.sweep import checks, strategies
from pipelines.sweep.storage import check_storage
from pipelines.sweep.strategies import Scheduler, Searcher, StrategyContext
from search_spaces import SearchSpace, load_search_space
from search_spaces.convert import SearcherSpace, flatten_sample, searcher_space
from trainables.metrics import ExtraMetrics
from trainables.registry import TrainableInfo

if TYPE_CHECKING:
    from pipelines.sweep.warm_start import WarmStart

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPlan:
    """Everything needed to assemble the Tuner, derived and checked from the config.

    Attributes:
        config: The config it was planned from.
        info: The trainable's registry entry.
        space: The validated search space.
        converted: The space in the searcher's form.
        param_space: ``Tuner(param_space=...)``: fixed hyperparameters plus searched domains.
        num_samples: Trials to run (an enumerating searcher multiplies its points).
        max_epochs: The longest a trial can run (the schedulers' horizon).
        task: ``classification`` or ``regression``.
        searcher: The searcher's registry entry; ``searcher_options`` its validated options.
        scheduler: The scheduler's registry entry; ``scheduler_options`` its validated options.
        resolve: Turns Tune's trial config into the trial's active hyperparameters.
        extra_metrics: Library and user metrics computed on the validation split (None: none).

    """

    config: ExperimentConfig
    info: TrainableInfo
    space: SearchSpace
    converted: SearcherSpace
    param_space: dict[str, Any]
    num_samples: int
    max_epochs: int
    task: str
    searcher: Searcher
    searcher_options: Any
    scheduler: Scheduler
    scheduler_options: Any
    resolve: Callable[[Mapping[str, Any]], dict[str, Any]]
    extra_metrics: ExtraMetrics | None = None

    @property
    def searched(self) -> tuple[str, ...]:
        """Names of the hyperparameters the search space varies (constants left out)."""
        return tuple(n for n, spec in self.space.params.items() if spec.type != "constant")

    def strategy_context(
        self, warm_start: WarmStart | None = None, max_concurrent: int | None = None
    ) -> StrategyContext:
        """Return what the strategy factories read (the seed moved past a warm start's trials).

        ``max_concurrent`` replaces ``search.max_concurrent`` (the limit the cluster sets for
        data-parallel trials, see :func:`pipelines.sweep.tuner.max_concurrent_trials`).
        """
        search = self.config.search
        return StrategyContext(
            metric=self.config.metric,
            mode=self.config.mode,
            seed=warm_start.seed(search.seed) if warm_start else search.seed,
            max_epochs=self.max_epochs,
            space=self.space,
            searcher_space=self.converted,
            repeats=search.num_samples,
            max_concurrent=max_concurrent or search.max_concurrent,
            warm_start=warm_start,
        )

    def build_strategies(
        self, warm_start: WarmStart | None = None, max_concurrent: int | None = None
    ) -> tuple[Any, Any]:
        """Return Ray's (searcher, scheduler) objects, the searcher warm if ``warm_start``."""
        ctx = self.strategy_context(warm_start, max_concurrent)
        return (
            strategies.build(self.searcher, self.searcher_options, ctx),
            strategies.build(self.scheduler, self.scheduler_options, ctx),
        )


def plan_sweep(
    config: ExperimentConfig, target: Any = None, search_paths: Sequence[Path] | None = None
) -> SweepPlan:
    """Check every cross-section rule and plan the sweep's pieces.

    Args:
        config: The experiment config.
        target: The user's trainable passed from Python (a function or class), which takes
            the place of ``trainable.target``.
        search_paths: Where the user's module is looked for (default: the config file's
            folder, then the working directory).

    Raises:
        UserInputError: Naming the config file and key, for the first rule broken.

    """
    try:
        plan = _plan(config, target, search_paths)
    except UserInputError as exc:
        if exc.source is None and config.source is not None:
            raise exc.with_source(config.source) from None
        raise
    logger.debug("planned sweep %s: %d trials", config.name, plan.num_samples)
    return plan


def _plan(config: ExperimentConfig, target: Any, search_paths: Sequence[Path] | None) -> SweepPlan:
    info = checks.trainable_info(config, target, search_paths)
    space = load_search_space(config.trainable.search_space)
    checks.check_hparams(config, info, space)
    check_data_source(config.data)
    check_streaming(config.data)
    task = dataset_task(config.data)
    checks.check_metric(config, info, task)
    checks.check_registration(config, info)
    params = config.trainable.params
    augmentation = check_augmentation(
        params, space, config.data.augment, data_modality(config.data)
    )
    checks.check_combinations(config, space)
    checks.check_precision(config, space)
    checks.check_augment_device(config, info)
    checks.check_workers(config, info)
    check_streaming_trainable(config.data, info.batch_framework)
    checks.check_node_labels(config)
    check_storage(config.storage)

    searcher_name, scheduler_name = checks.strategy_names(config)
    searcher = strategies.lookup(strategies.SEARCHERS, searcher_name, key="search.method")
    converted = searcher_space(space, searcher.space_form, searcher.name)
    scheduler = strategies.lookup(strategies.SCHEDULERS, scheduler_name, key="scheduler")
    checks.check_strategy_pair(searcher, scheduler)
    max_epochs = checks.max_epochs(config, space)
    fixed: dict[str, Any] = {"seed": config.search.seed or 0}
    if config.trainable.model is not None:  # a bundled model; the user's code builds its own
        fixed = {"model": config.trainable.model, **fixed}
    fixed.update(augmentation)
    fixed.update(params)
    num_samples = config.search.num_samples
    if searcher.enumerates_points:  # num_samples repeats the enumerated points
        num_samples *= converted.num_points or 1
    plan = SweepPlan(
        config=config,
        info=info,
        space=space,
        converted=converted,
        param_space={**fixed, **converted.param_space},
        num_samples=num_samples,
        max_epochs=max_epochs,
        task=task,
        searcher=searcher,
        searcher_options=strategies.parse_options(
            searcher, config.search.options, key="search.method.options"
        ),
        scheduler=scheduler,
        scheduler_options=strategies.parse_options(
            scheduler, config.scheduler.options, key="scheduler.options"
        ),
        resolve=partial(resolve_trial_config, space),
        extra_metrics=_extra_metrics(config, info, task),
    )
    _check_strategies(plan)
    return plan


def _extra_metrics(
    config: ExperimentConfig, info: TrainableInfo, task: str
) -> ExtraMetrics | None:
    names = checks.extra_metrics(config, info, task)
    if not names:
        return None
    search = info.search_path or (str(config.source.parent) if config.source else None)
    # The targets' scale is the data's (DataSpec.target_std); each trial binds it.
    return ExtraMetrics(names, task, search_path=search)


def _check_strategies(plan: SweepPlan) -> None:
    """Run each strategy's own checks now, so they fail before any cluster work."""
    ctx = plan.strategy_context()
    for strategy, options in (
        (plan.searcher, plan.searcher_options),
        (plan.scheduler, plan.scheduler_options),
    ):
        if strategy.check is not None:
            strategy.check(options, ctx)


def resolve_trial_config(space: SearchSpace, config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a trial's hyperparameters as trials see them: flat, only active parameters."""
    return space.active(flatten_sample(dict(config)))
