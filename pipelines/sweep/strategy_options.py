"""What each searcher and scheduler can be told: one pydantic model of options per strategy.

Unknown options are errors (``extra="forbid"``) and every value is range-checked, so a typo in
``search.options`` or ``scheduler.options`` fails before any cluster work, naming the option.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StrategyOptions(BaseModel):
    """Options of one strategy: frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(StrategyOptions):
    """A strategy without options."""


class TPEOptions(StrategyOptions):
    """Options of Optuna's TPE sampler, used through Ray's OptunaSearch adapter."""

    n_startup_trials: int = Field(4, ge=1)
    multivariate: bool = True
    # With several trials in flight, pretend pending ones scored badly so TPE spreads out.
    constant_liar: bool = True


class GPOptions(StrategyOptions):
    """Options of Optuna's Gaussian-process sampler."""

    n_startup_trials: int = Field(4, ge=1)


class HyperOptOptions(StrategyOptions):
    """Options of HyperOpt's TPE, used through Ray's HyperOptSearch adapter."""

    n_initial_points: int = Field(4, ge=1)
    gamma: float = Field(0.25, gt=0, lt=1)


class ASHAOptions(StrategyOptions):
    """Options of asynchronous successive halving (rungs at grace_period * eta^k)."""

    max_t: int | None = Field(None, ge=1)
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3.0, gt=1)
    brackets: int = Field(1, ge=1)


class HyperbandOptions(StrategyOptions):
    """Options of (synchronous) Hyperband."""

    max_t: int | None = Field(None, ge=1)
    reduction_factor: float = Field(3.0, gt=1)


class MedianOptions(StrategyOptions):
    """Options of the median stopping rule."""

    grace_period: int = Field(1, ge=0)
    min_samples_required: int = Field(3, ge=1)


class PBTOptions(StrategyOptions):
    """Options of population-based training; mutations apply to searched lr and momentum."""

    perturbation_interval: int = Field(2, ge=1)
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)
    resample_probability: float = Field(0.25, ge=0, le=1)
    mutate: tuple[str, ...] = ("lr", "momentum")
    # Asynchronous PBT compares a trial only with trials that are still running. Synchronous
    # PBT pauses the leaders at each interval until every trial has reached it, so that small
    # or unevenly started populations are compared at the same epoch, at the cost of the pauses.
    synch: bool = False
