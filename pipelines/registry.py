"""Search algorithms and trial schedulers, chosen by name.

Each strategy is a name, a pydantic model of its options (unknown options are errors) and a
factory that imports Ray's implementation only when called. Presets are compositions of entries
here, never new logic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.errors import ConfigError


@dataclass(frozen=True)
class StrategyContext:
    """What every strategy factory may need, declared once in the experiment config."""

    metric: str
    mode: str
    seed: int | None
    max_epochs: int


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


class ASHAOptions(_Options):
    """Options of asynchronous successive halving (rungs at grace_period * eta^k)."""

    max_t: int | None = Field(None, ge=1)
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3.0, gt=1)
    brackets: int = Field(1, ge=1)


@dataclass(frozen=True)
class Strategy:
    """A registered searcher or scheduler."""

    name: str
    options: type[_Options]
    factory: Callable[[Any, StrategyContext], Any]
    summary: str


def _random(_: NoOptions, ctx: StrategyContext) -> Any:
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=ctx.seed)


def _tpe(opts: TPEOptions, ctx: StrategyContext) -> Any:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(
        seed=ctx.seed,
        n_startup_trials=opts.n_startup_trials,
        multivariate=opts.multivariate,
        constant_liar=opts.constant_liar,
    )
    # Concurrency is capped by TuneConfig(max_concurrent_trials), which wraps any searcher.
    return OptunaSearch(sampler=sampler, metric=ctx.metric, mode=ctx.mode)


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


SEARCHERS: dict[str, Strategy] = {
    "random": Strategy("random", NoOptions, _random, "random sampling of the search space"),
    # Grid uses the same generator; the search-space converter turns values into grid axes.
    "grid": Strategy("grid", NoOptions, _random, "every point of a discrete grid once"),
    "tpe": Strategy("tpe", TPEOptions, _tpe, "Bayesian optimisation, Optuna TPE"),
}

SCHEDULERS: dict[str, Strategy] = {
    "fifo": Strategy("fifo", NoOptions, _fifo, "run every trial to the end"),
    "asha": Strategy("asha", ASHAOptions, _asha, "asynchronous successive halving"),
}


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
        if error["type"] == "extra_forbid" or error["type"] == "extra_forbidden":
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
    strategy = lookup(table, name, key=f"{key}")
    return strategy.factory(parse_options(strategy, options, key=f"{key}.options"), ctx)
