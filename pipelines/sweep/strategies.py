"""Search algorithms and trial schedulers, chosen by name, each declaring its traits.

Each strategy is a name, a pydantic model of its options (unknown options are errors), a factory
that imports Ray's implementation only when called, and the traits the rest of the sweep needs
to know about it: the form of search space it takes, whether it caps concurrency itself, how
many checkpoints it needs. Nothing else in tunepipe switches on a strategy's name, so a new
searcher or scheduler is one entry here (plus a space converter in ``search_spaces`` only if it
needs a space form none of the others uses). Presets are pairs of entries, never new logic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from pipelines.errors import ConfigError
from pipelines.sweep.strategy_options import (
    ASHAOptions,
    GPOptions,
    HyperbandOptions,
    HyperOptOptions,
    MedianOptions,
    NoOptions,
    PBTOptions,
    StrategyOptions,
    TPEOptions,
)
from search_spaces.spec import IntSpec, LogIntSpec, LogUniformSpec, QuantizedSpec, UniformSpec

if TYPE_CHECKING:
    from pipelines.sweep.warm_start import WarmStart
    from search_spaces import SearcherSpace, SearchSpace


@dataclass(frozen=True)
class StrategyContext:
    """What every strategy factory may need, declared once in the experiment config.

    Attributes:
        metric: The metric optimised.
        mode: ``"min"`` or ``"max"``.
        seed: Seed for reproducible suggestions (None: not seeded).
        max_epochs: Longest a trial can run (the schedulers' horizon).
        space: The validated search space.
        searcher_space: The space converted into the chosen searcher's form.
        repeats: How often an enumerating searcher runs its points (``search.num_samples``).
        max_concurrent: Trials in flight at most (None: as many as resources allow).
        warm_start: Earlier results to start from (:mod:`pipelines.sweep.warm_start`), or None.

    """

    metric: str
    mode: str
    seed: int | None
    max_epochs: int
    space: SearchSpace
    searcher_space: SearcherSpace
    repeats: int = 1
    max_concurrent: int | None = None
    warm_start: WarmStart | None = None

    def warm_points(self) -> list[dict[str, Any]] | None:
        """Return the earlier configurations to evaluate first (None: a cold start)."""
        return self.warm_start.points() or None if self.warm_start is not None else None


@dataclass(frozen=True)
class Strategy:
    """A registered searcher or scheduler.

    Attributes:
        name: The config name.
        options: Its options model (unknown options are errors).
        factory: Builds Ray's object from validated options (imports Ray lazily).
        summary: One line for listings.
        check: Rules a factory would otherwise find only when it builds; run when the sweep is
            planned, so they fail before any cluster work (None: nothing to check).

    """

    name: str
    options: type[StrategyOptions]
    factory: Callable[[Any, StrategyContext], Any]
    summary: str
    check: Callable[[Any, StrategyContext], None] | None = None


@dataclass(frozen=True)
class Searcher(Strategy):
    """A search algorithm and its traits.

    Attributes:
        space_form: How ``search_spaces`` converts the space for it (see
            ``search_spaces.convert.SPACE_FORMS``): ``independent`` (flat Tune domains, each
            drawn on its own), ``grid`` (enumerated points), ``tune`` (flat Tune domains a Ray
            adapter converts), ``optuna`` (define-by-run), ``hyperopt`` (nested).
        caps_concurrency: It takes ``search.max_concurrent`` itself; Tune's own limit ignores it.
        enumerates_points: It runs a fixed list of points; ``num_samples`` repeats the list.
        follows_mutations: It can run under a scheduler that changes hyperparameters mid-trial
            (only independent sampling can: a model-based searcher would learn from values the
            trial no longer has).

    """

    space_form: str = "tune"
    caps_concurrency: bool = False
    enumerates_points: bool = False
    follows_mutations: bool = False


@dataclass(frozen=True)
class Scheduler(Strategy):
    """A trial scheduler and its traits.

    Attributes:
        mutates_hparams: It changes a running trial's hyperparameters (needs a searcher that
            :attr:`~Searcher.follows_mutations`).
        min_checkpoints: Checkpoints each trial must keep at least (PBT exploits older ones).
        uses_python_random: It draws from Python's global generator, seeded from
            ``search.seed`` before the sweep starts.

    """

    mutates_hparams: bool = False
    min_checkpoints: int = 0
    uses_python_random: bool = False


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
    points = list(ctx.searcher_space.points_to_evaluate or []) * ctx.repeats
    return BasicVariantGenerator(points_to_evaluate=points, max_concurrent=ctx.max_concurrent or 0)


def _quiet_optuna() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _optuna(sampler: Any, ctx: StrategyContext) -> Any:
    from ray.tune.search.optuna import OptunaSearch

    from pipelines.sweep.warm_start import seeded_optuna_storage

    space = ctx.searcher_space.native
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
    conditional = ctx.space.is_conditional()
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
    flat = not ctx.space.is_conditional()
    return HyperOptSearch(
        space=ctx.searcher_space.native,
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


def _pbt_mutations(opts: PBTOptions, ctx: StrategyContext) -> dict[str, Any]:
    from search_spaces.convert import to_tune_domains

    domains = to_tune_domains(ctx.space, "independent")
    return {name: domains[name] for name in opts.mutate if name in domains}


def _check_pbt(opts: PBTOptions, ctx: StrategyContext) -> None:
    if not any(name in ctx.space.params for name in opts.mutate):
        raise ConfigError(
            f"PBT mutates {list(opts.mutate)} but none of them is searched",
            key="scheduler.options.mutate",
            fix=f"search over one of them, or list searched ones: {ctx.space.names()}",
        )


def _pbt(opts: PBTOptions, ctx: StrategyContext) -> Any:
    from ray.tune.schedulers import PopulationBasedTraining

    mutations = _pbt_mutations(opts, ctx)
    return PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=opts.perturbation_interval,
        hyperparam_mutations=mutations,
        quantile_fraction=opts.quantile_fraction,
        resample_probability=opts.resample_probability,
        custom_explore_fn=ClipToBounds.from_space(ctx.space, list(mutations)),
        synch=opts.synch,
    )


@dataclass(frozen=True)
class ClipToBounds:
    """PBT explore step that keeps perturbed values inside the search space's bounds.

    Ray's PBT multiplies a value by 1.2 or 0.8 without looking at its domain, so a momentum of
    0.9 can become 1.08, which no optimiser accepts.
    """

    bounds: tuple[tuple[str, float, float], ...]

    @classmethod
    def from_space(cls, space: SearchSpace, names: list[str]) -> ClipToBounds:
        """Collect ``(name, low, high)`` of the bounded parameters among ``names``."""
        bounded = [(name, space.params[name]) for name in names]
        return cls(
            tuple(
                (name, float(spec.low), float(spec.high))
                for name, spec in bounded
                if isinstance(
                    spec, UniformSpec | LogUniformSpec | IntSpec | LogIntSpec | QuantizedSpec
                )
            )
        )

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        """Clip each bounded parameter of ``config`` in place and return it."""
        for name, low, high in self.bounds:
            if name in config:
                config[name] = type(config[name])(min(max(config[name], low), high))
        return config


SEARCHERS: dict[str, Searcher] = {
    "random": Searcher(
        "random",
        NoOptions,
        _random,
        "random sampling of the search space",
        space_form="independent",
        caps_concurrency=True,
        follows_mutations=True,
    ),
    "grid": Searcher(
        "grid",
        NoOptions,
        _grid,
        "every point of a discrete grid once",
        space_form="grid",
        caps_concurrency=True,
        enumerates_points=True,
    ),
    "tpe": Searcher(
        "tpe", TPEOptions, _tpe, "Bayesian optimisation, Optuna TPE", space_form="optuna"
    ),
    "gp": Searcher(
        "gp",
        GPOptions,
        _gp,
        "Bayesian optimisation, Gaussian-process surrogate",
        space_form="optuna",
    ),
    "hyperopt": Searcher(
        "hyperopt", HyperOptOptions, _hyperopt, "Bayesian, HyperOpt TPE", space_form="hyperopt"
    ),
}

SCHEDULERS: dict[str, Scheduler] = {
    "fifo": Scheduler("fifo", NoOptions, _fifo, "run every trial to the end"),
    "asha": Scheduler("asha", ASHAOptions, _asha, "asynchronous successive halving"),
    "hyperband": Scheduler("hyperband", HyperbandOptions, _hyperband, "synchronous Hyperband"),
    "median": Scheduler("median", MedianOptions, _median, "median stopping rule"),
    "pbt": Scheduler(
        "pbt",
        PBTOptions,
        _pbt,
        "population-based training",
        check=_check_pbt,
        mutates_hparams=True,
        # A checkpoint PBT wants to exploit must still exist when it decides to.
        min_checkpoints=4,
        uses_python_random=True,
    ),
}

S = TypeVar("S", bound=Strategy)

#: Named (searcher, scheduler) pairs. "bohb-like": model-based proposals plus successive halving.
PRESETS: dict[str, tuple[str, str]] = {"bohb-like": ("tpe", "asha")}


def lookup(table: dict[str, S], name: str, *, key: str) -> S:
    """Return the strategy called ``name``, or a ConfigError listing the valid names."""
    try:
        return table[name]
    except KeyError:
        valid = ", ".join(sorted(table))
        raise ConfigError(f"unknown name {name!r}", key=key, fix=f"use one of: {valid}") from None


def parse_options(strategy: Strategy, options: dict[str, Any], *, key: str) -> StrategyOptions:
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


def build(strategy: Strategy, options: StrategyOptions, ctx: StrategyContext) -> Any:
    """Build ``strategy``'s Ray object from options :func:`parse_options` validated."""
    return strategy.factory(options, ctx)
