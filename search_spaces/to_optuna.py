"""A define-by-run space for Optuna (TPE, GP) that suggests only active parameters.

Ray's OptunaSearch converts flat Tune domains into a fixed set of Optuna distributions, so every
parameter would be sampled in every trial and the model would learn from values that had no
effect (momentum under adam). A define-by-run function instead asks the trial for each parameter
in file order, parents first, and skips a child whose parent value leaves it inactive; Optuna
records only what was asked, so its model sees exactly the active parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from search_spaces.rules import check_model_based
from search_spaces.space import SearchSpace
from search_spaces.spec import (
    CategoricalSpec,
    ConstantSpec,
    IntSpec,
    LogIntSpec,
    LogUniformSpec,
    ParamSpec,
    QuantizedSpec,
    UniformSpec,
)


@dataclass(frozen=True)
class OptunaSpace:
    """Define-by-run function for ``OptunaSearch(space=...)``; a picklable callable.

    Ray checkpoints the searcher, so this is a dataclass holding the (picklable) space rather
    than a closure.

    Attributes:
        space: The validated search space.

    """

    space: SearchSpace

    def __call__(self, trial: Any) -> dict[str, Any]:
        """Suggest the active parameters on ``trial`` and return them with the constants.

        Args:
            trial: An ``optuna.Trial``, or Ray's stand-in with the same ``suggest_*`` methods.

        Returns:
            The active parameters, flat. Constants are not suggested (Optuna has nothing to
            learn about them) and reach the trial only through this dict.

        """
        chosen: dict[str, Any] = {}
        for name, spec in self.space.params.items():
            if self.space.is_active(name, chosen):
                chosen[name] = _suggest(trial, name, spec)
        return chosen


def optuna_space(space: SearchSpace, searcher: str) -> OptunaSpace:
    """Return the define-by-run function for ``space`` (``searcher`` names it in errors).

    Raises:
        SearchSpaceError: If a parameter is ``type: grid``.

    """
    check_model_based(space, searcher)
    return OptunaSpace(space)


def _suggest(trial: Any, name: str, spec: ParamSpec) -> Any:
    # Optuna's int bounds are inclusive, like ours: no +1 here, unlike for Ray's domains.
    if isinstance(spec, ConstantSpec):
        return spec.value
    if isinstance(spec, CategoricalSpec):
        return trial.suggest_categorical(name, list(spec.values))
    if isinstance(spec, UniformSpec):
        return trial.suggest_float(name, spec.low, spec.high)
    if isinstance(spec, LogUniformSpec):
        return trial.suggest_float(name, spec.low, spec.high, log=True)
    if isinstance(spec, QuantizedSpec):
        # Optuna steps from its low bound; starting at a multiple keeps Ray's grid of q.
        first, last = spec.multiples()
        return trial.suggest_float(name, first, last, step=spec.q)
    if isinstance(spec, IntSpec):
        return trial.suggest_int(name, spec.low, spec.high)
    if isinstance(spec, LogIntSpec):
        return trial.suggest_int(name, spec.low, spec.high, log=True)
    raise AssertionError(f"unhandled spec type {type(spec).__name__}")  # grid: checked before
