"""Search algorithms and trial schedulers, chosen by name.

Each strategy is a name, a pydantic model of its options (unknown options are errors) and a
factory that imports Ray's implementation only when called. Presets are pairs of entries here
(a searcher and a scheduler), never new logic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.errors import ConfigError


@dataclass(frozen=True)
class StrategyContext:
    """What every strategy factory may need, declared once in the experiment config.

    Attributes:
        metric: The metric optimised.
        mode: ``"min"`` or ``"max"``.
        seed: Seed for reproducible suggestions (None: not seeded).
        max_epochs: Longest a trial can run (the schedulers' horizon).
        space: The validated :class:`~search_spaces.SearchSpace`.
        searcher_space: The space converted for the chosen searcher
            (:class:`~search_spaces.convert.SearcherSpace`).
        repeats: How often grid search runs its whole grid (``search.num_samples``).
        max_concurrent: Trials in flight at most (None: as many as resources allow).
        warm_start: Earlier results to start from (:mod:`pipelines.warm_start`), or None.

    """

    metric: str
    mode: str
    seed: int | None
    max_epochs: int
    space: Any = None
    searcher_space: Any = None
    repeats: int = 1
    max_concurrent: int | None = None
    warm_start: Any = None

    def warm_points(self) -> list[dict[str, Any]] | None:
        """Return the earlier configurations to evaluate first (None: a cold start)."""
        return self.warm_start.points() or None if self.warm_start is not None else None


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(_Options):
    """A strategy without options."""


class TPEOptions(_Options):
    """Options of Optuna's TPE sampler, used through Ray's OptunaSearch adapter."""

    n_startup_trials: int = Field(4, ge=1)
    multivariate: bool = True
    # With several trials in flight, pretend pending ones scored badly so TPE spreads out.
    constant_liar: bool = True


class GPOptions(_Options):
    """Options of Optuna's Gaussian-process sampler."""

    n_startup_trials: int = Field(4, ge=1)


class HyperOptOptions(_Options):
    """Options of HyperOpt's TPE, used through Ray's HyperOptSearch adapter."""

    n_initial_points: int = Field(4, ge=1)
    gamma: float = Field(0.25, gt=0, lt=1)


class ASHAOptions(_Options):
    """Options of asynchronous successive halving (rungs at grace_period * eta^k)."""

    max_t: int | None = Field(None, ge=1)
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3.0, gt=1)
    brackets: int = Field(1, ge=1)


class HyperbandOptions(_Options):
    """Options of (synchronous) Hyperband."""

    max_t: int | None = Field(None, ge=1)
    reduction_factor: float = Field(3.0, gt=1)


class MedianOptions(_Options):
    """Options of the median stopping rule."""

    grace_period: int = Field(1, ge=0)
    min_samples_required: int = Field(3, ge=1)


class PBTOptions(_Options):
    """Options of population-based training; mutations apply to searched lr and momentum."""

    perturbation_interval: int = Field(2, ge=1)
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)
    resample_probability: float = Field(0.25, ge=0, le=1)
    mutate: tuple[str, ...] = ("lr", "momentum")


@dataclass(frozen=True)
class Strategy:
    """A registered searcher or scheduler."""

    name: str
    options: type[_Options]
    factory: Callable[[Any, StrategyContext], Any]
    summary: str


def _random(_: NoOptions, ctx: StrategyContext) -> Any:
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune's max_concurrent_trials ignores this generator: it takes the limit itself.
    return BasicVariantGenerator(
        points_to_evaluate=ctx.warm_points(),
        random_state=ctx.seed,
        max_concurrent=ctx.max_concurrent or 0,
    )


def _grid(_: NoOptions, ctx: StrategyContext) -> Any:
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # The grid is enumerated by search_spaces (respecting conditional parameters). Each point
    # is listed once per repeat: beyond its points the generator would sample the (empty) space.
    points = list(ctx.searcher_space.points_to_evaluate) * ctx.repeats
    return BasicVariantGenerator(points_to_evaluate=points, max_concurrent=ctx.max_concurrent or 0)


def _quiet_optuna() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _optuna(sampler: Any, ctx: StrategyContext) -> Any:
    from ray.tune.search.optuna import OptunaSearch

    from pipelines.warm_start import seeded_optuna_storage

    space = ctx.searcher_space.optuna_space
    storage = None
    if ctx.warm_start is not None and ctx.warm_start.trials:
        # The study starts with every earlier result in it: the sampler's model is warm.
        storage = seeded_optuna_storage(space, ctx.mode, ctx.warm_start.trials, "tunepipe")
    # Concurrency is capped by TuneConfig(max_concurrent_trials), which wraps any searcher.
    return OptunaSearch(
        space=space,
        sampler=sampler,
        metric=ctx.metric,
        mode=ctx.mode,
        points_to_evaluate=ctx.warm_points(),
        storage=storage,
        study_name="tunepipe",
    )


def _tpe(opts: TPEOptions, ctx: StrategyContext) -> Any:
    import optuna

    _quiet_optuna()
    conditional = ctx.space is not None and ctx.space.is_conditional()
    sampler = optuna.samplers.TPESampler(
        seed=ctx.seed,
        n_startup_trials=opts.n_startup_trials,
        multivariate=opts.multivariate,
        # group=True models conditional parameters per sub-space instead of sampling them at
        # random (Optuna marks it experimental; its warning is silenced below).
        group=opts.multivariate and conditional,
        constant_liar=opts.constant_liar,
    )
    return _optuna(sampler, ctx)


def _gp(opts: GPOptions, ctx: StrategyContext) -> Any:
    import optuna

    _quiet_optuna()
    # The GP models the parameters every trial has; conditional ones are sampled independently,
    # which Optuna would otherwise warn about on every trial.
    sampler = optuna.samplers.GPSampler(
        seed=ctx.seed, n_startup_trials=opts.n_startup_trials, warn_independent_sampling=False
    )
    return _optuna(sampler, ctx)


def _hyperopt(opts: HyperOptOptions, ctx: StrategyContext) -> Any:
    from ray.tune.search.hyperopt import HyperOptSearch

    # HyperOpt's points are nested like its space; only flat (unconditional) ones are passed.
    flat = ctx.space is not None and not ctx.space.is_conditional()
    return HyperOptSearch(
        space=ctx.searcher_space.hyperopt_space,
        points_to_evaluate=ctx.warm_points() if flat else None,
        metric=ctx.metric,
        mode=ctx.mode,
        n_initial_points=opts.n_initial_points,
        random_state_seed=ctx.seed,
        gamma=opts.gamma,
    )


def _fifo(_: NoOptions, ctx: StrategyContext) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def _asha(opts: ASHAOptions, ctx: StrategyContext) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=opts.max_t or ctx.max_epochs,
        grace_period=opts.grace_period,
        reduction_factor=opts.reduction_factor,
        brackets=opts.brackets,
    )


def _hyperband(opts: HyperbandOptions, ctx: StrategyContext) -> Any:
    from ray.tune.schedulers import HyperBandScheduler

    return HyperBandScheduler(
        time_attr="training_iteration",
        max_t=opts.max_t or ctx.max_epochs,
        reduction_factor=opts.reduction_factor,
    )


def _median(opts: MedianOptions, ctx: StrategyContext) -> Any:
    from ray.tune.schedulers import MedianStoppingRule

    return MedianStoppingRule(
        time_attr="training_iteration",
        grace_period=opts.grace_period,
        min_samples_required=opts.min_samples_required,
    )


def _pbt(opts: PBTOptions, ctx: StrategyContext) -> Any:
    from ray.tune.schedulers import PopulationBasedTraining

    from search_spaces.convert import to_tune_domains

    domains = to_tune_domains(ctx.space, "random")
    mutations = {name: domains[name] for name in opts.mutate if name in domains}
    if not mutations:
        raise ConfigError(
            f"PBT mutates {list(opts.mutate)} but none of them is searched",
            key="scheduler.options.mutate",
            fix=f"search over one of them, or list searched ones: {ctx.space.names()}",
        )
    return PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=opts.perturbation_interval,
        hyperparam_mutations=mutations,
        quantile_fraction=opts.quantile_fraction,
        resample_probability=opts.resample_probability,
        custom_explore_fn=ClipToBounds.from_space(ctx.space, list(mutations)),
    )


@dataclass(frozen=True)
class ClipToBounds:
    """PBT explore step that keeps perturbed values inside the search space's bounds.

    Ray's PBT multiplies a value by 1.2 or 0.8 without looking at its domain, so a momentum of
    0.9 can become 1.08, which no optimiser accepts.
    """

    bounds: tuple[tuple[str, float, float], ...]

    @classmethod
    def from_space(cls, space: Any, names: list[str]) -> ClipToBounds:
        """Collect ``(name, low, high)`` of the bounded parameters among ``names``."""
        specs = [(name, space.params[name]) for name in names]
        return cls(tuple((n, s.low, s.high) for n, s in specs if hasattr(s, "low")))

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        """Clip each bounded parameter of ``config`` in place and return it."""
        for name, low, high in self.bounds:
            if name in config:
                config[name] = type(config[name])(min(max(config[name], low), high))
        return config


SEARCHERS: dict[str, Strategy] = {
    "random": Strategy("random", NoOptions, _random, "random sampling of the search space"),
    "grid": Strategy("grid", NoOptions, _grid, "every point of a discrete grid once"),
    "tpe": Strategy("tpe", TPEOptions, _tpe, "Bayesian optimisation, Optuna TPE"),
    "gp": Strategy("gp", GPOptions, _gp, "Bayesian optimisation, Gaussian-process surrogate"),
    "hyperopt": Strategy("hyperopt", HyperOptOptions, _hyperopt, "Bayesian, HyperOpt TPE"),
}

SCHEDULERS: dict[str, Strategy] = {
    "fifo": Strategy("fifo", NoOptions, _fifo, "run every trial to the end"),
    "asha": Strategy("asha", ASHAOptions, _asha, "asynchronous successive halving"),
    "hyperband": Strategy("hyperband", HyperbandOptions, _hyperband, "synchronous Hyperband"),
    "median": Strategy("median", MedianOptions, _median, "median stopping rule"),
    "pbt": Strategy("pbt", PBTOptions, _pbt, "population-based training"),
}

#: Named (searcher, scheduler) pairs. "bohb-like": model-based proposals plus successive halving.
PRESETS: dict[str, tuple[str, str]] = {"bohb-like": ("tpe", "asha")}

#: Schedulers that change a trial's hyperparameters, which model-based searchers cannot follow.
NEEDS_RANDOM_SEARCH = frozenset({"pbt"})


def lookup(table: dict[str, Strategy], name: str, *, key: str) -> Strategy:
    """Return the strategy called ``name``, or a ConfigError listing the valid names."""
    try:
        return table[name]
    except KeyError:
        valid = ", ".join(sorted(table))
        raise ConfigError(f"unknown name {name!r}", key=key, fix=f"use one of: {valid}") from None


def parse_options(strategy: Strategy, options: dict[str, Any], *, key: str) -> _Options:
    """Validate ``options`` for ``strategy``; unknown or ill-typed options are ConfigErrors."""
    try:
        return strategy.options.model_validate(options)
    except ValidationError as exc:
        error = exc.errors()[0]
        option = ".".join(str(part) for part in error["loc"])
        valid = ", ".join(strategy.options.model_fields) or "none"
        if error["type"] == "extra_forbidden":
            rule = f"unknown option {option!r} for {strategy.name!r}"
        else:
            rule = f"{option}: {error['msg'].rstrip('.')}, got {error.get('input')!r}"
        raise ConfigError(rule, key=key, fix=f"valid options: {valid}") from None


def build(
    table: dict[str, Strategy],
    name: str,
    options: dict[str, Any],
    ctx: StrategyContext,
    *,
    key: str,
) -> Any:
    """Build the named strategy with validated options."""
    strategy = lookup(table, name, key=key)
    return strategy.factory(parse_options(strategy, options, key=f"{key}.options"), ctx)
