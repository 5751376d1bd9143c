"""Turn a :class:`SearchSpace` into the form a searcher takes, sampling only active parameters.

:func:`searcher_space` is the entry point. A searcher declares its *space form* (the strategy
registry's ``space_form`` trait); this module owns the table of forms and never sees a
searcher's name except in error messages:

* ``independent``: Ray Tune domains for *every* parameter, and the trial keeps only the active
  ones (:meth:`SearchSpace.active`). Each parameter is drawn independently (random search), so
  dropping an inactive one afterwards leaves the distribution of the active ones exactly as if
  only they had been sampled, and the draws still come from the seeded generator.
* ``grid``: the grid enumerated with conditions (:mod:`search_spaces.grid`).
* ``tune``: flat Ray Tune domains for a model-based searcher that Ray's adapter converts
  itself (unconditional spaces only).
* ``optuna``: an Optuna define-by-run function (:mod:`search_spaces.to_optuna`).
* ``hyperopt``: a nested HyperOpt space (:mod:`search_spaces.to_hyperopt`); its samples are
  flattened back with :func:`flatten_sample`.

A searcher that needs a form none of these is adds one converter module and one
:data:`SPACE_FORMS` entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from search_spaces.grid import MAX_GRID_INT_VALUES, count_grid, enumerate_grid
from search_spaces.space import SearchSpace
from search_spaces.to_optuna import optuna_space
from search_spaces.to_tune import to_tune_domains

__all__ = [
    "MAX_GRID_INT_VALUES",
    "SPACE_FORMS",
    "SearcherSpace",
    "flatten_sample",
    "grid_size",
    "searcher_space",
    "to_tune_domains",
]


@dataclass(frozen=True)
class SearcherSpace:
    """A search space converted into one searcher's form.

    Attributes:
        form: The space form (a key of :data:`SPACE_FORMS`).
        param_space: Goes into ``Tuner(param_space=...)``; ``{}`` when the searcher holds the
            space itself.
        native: The form's own space object for the searcher's constructor (a define-by-run
            function for Optuna, a nested dict for HyperOpt), or None.
        points_to_evaluate: The enumerated points, only active parameters per point (grid).
        num_points: Number of enumerated points (grid).

    """

    form: str
    param_space: dict[str, Any]
    native: Any = None
    points_to_evaluate: list[dict[str, Any]] | None = None
    num_points: int | None = None


def _independent(space: SearchSpace, searcher: str) -> SearcherSpace:
    return SearcherSpace("independent", to_tune_domains(space, "independent", searcher))


def _grid(space: SearchSpace, searcher: str) -> SearcherSpace:
    points = enumerate_grid(space)
    return SearcherSpace(
        "grid",
        param_space=_grid_placeholders(points),
        points_to_evaluate=points,
        num_points=len(points),
    )


def _tune(space: SearchSpace, searcher: str) -> SearcherSpace:
    return SearcherSpace("tune", to_tune_domains(space, "tune", searcher))


def _optuna(space: SearchSpace, searcher: str) -> SearcherSpace:
    return SearcherSpace("optuna", param_space={}, native=optuna_space(space, searcher))


def _hyperopt(space: SearchSpace, searcher: str) -> SearcherSpace:
    # HyperOpt is imported only when it is the chosen searcher's form.
    from search_spaces.to_hyperopt import hyperopt_space

    return SearcherSpace("hyperopt", param_space={}, native=hyperopt_space(space, searcher))


#: Space form -> converter. Searchers name their form in the strategy registry.
SPACE_FORMS: dict[str, Callable[[SearchSpace, str], SearcherSpace]] = {
    "independent": _independent,
    "grid": _grid,
    "tune": _tune,
    "optuna": _optuna,
    "hyperopt": _hyperopt,
}


def searcher_space(space: SearchSpace, form: str, searcher: str | None = None) -> SearcherSpace:
    """Convert ``space`` into ``form`` so that only active parameters are sampled.

    Args:
        space: A validated search space.
        form: A key of :data:`SPACE_FORMS`.
        searcher: The searcher's name, for error messages (default: the form).

    Returns:
        The pieces for the Tuner and the searcher; see :class:`SearcherSpace`.

    Raises:
        SearchSpaceError: Naming the parameter, if it cannot be searched in ``form``.
        ValueError: For an unknown form (a strategy registry bug, not user input).

    """
    if form not in SPACE_FORMS:
        raise ValueError(f"unknown space form {form!r}; forms: {', '.join(SPACE_FORMS)}")
    return SPACE_FORMS[form](space, searcher or form)


def flatten_sample(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a (possibly nested) HyperOpt sample as a flat ``{name: value}`` dict.

    A HyperOpt branch is a mapping under key ``k`` that itself holds ``k`` (the parent's own
    value); other values, including mappings without their own key, are kept as they are.
    Flat configs (from every other searcher) come back unchanged, so this can be called on
    every trial config, before :meth:`SearchSpace.active`.

    Args:
        config: A trial config, e.g. ``{"optimizer": {"optimizer": "sgd", "momentum": 0.9}}``.

    Returns:
        e.g. ``{"optimizer": "sgd", "momentum": 0.9}``.

    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and key in value:
            flat.update(flatten_sample(value))
        else:
            flat[key] = value
    return flat


def grid_size(space: SearchSpace) -> int:
    """Return the number of grid points (trials per sample) of ``space`` in the grid form.

    Conditions are respected: a child's values multiply only the points where it is active.

    Raises:
        SearchSpaceError: If a parameter cannot be grid-searched.

    """
    return count_grid(space)


def _grid_placeholders(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Return a Tune domain for every key of the grid points.

    Ray's variant generator looks up each key of a point in the parameter space and fails on
    unknown ones. A key that a point leaves out (an inactive conditional parameter) is filled
    from this domain by Ray and then dropped again by :meth:`SearchSpace.active`.
    """
    from ray import tune

    values: dict[str, list[Any]] = {}
    for point in points:
        for key, value in point.items():
            if value not in values.setdefault(key, []):
                values[key].append(value)
    return {key: tune.choice(choices) for key, choices in values.items()}
