"""Turn a :class:`SearchSpace` into what each searcher needs, sampling only active parameters.

:func:`searcher_space` is the entry point; it picks one strategy per search method:

* ``random``: Ray Tune domains for *every* parameter, and the trial keeps only the active ones
  (:meth:`SearchSpace.active`). Each parameter is drawn independently, so dropping an inactive
  one afterwards leaves the distribution of the active ones exactly as if only they had been
  sampled, and the draws still come from the seeded ``BasicVariantGenerator``, so a seed
  reproduces the sweep.
* ``grid``: the grid enumerated with conditions (:mod:`search_spaces.grid`).
* ``tpe``/``gp``: an Optuna define-by-run function (:mod:`search_spaces.to_optuna`).
* ``hyperopt``: a nested HyperOpt space (:mod:`search_spaces.to_hyperopt`); its samples are
  flattened back with :func:`flatten_sample`.

:func:`to_tune_domains` (from :mod:`search_spaces.to_tune`) keeps the flat Ray Tune conversion
for unconditional spaces.
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
    "SearcherSpace",
    "flatten_sample",
    "grid_size",
    "searcher_space",
    "to_tune_domains",
]


@dataclass(frozen=True)
class SearcherSpace:
    """A search space converted for one search method.

    Attributes:
        param_space: Goes into ``Tuner(param_space=...)``; ``{}`` when the searcher holds the
            space itself.
        optuna_space: Define-by-run function for ``OptunaSearch(space=...)`` (tpe, gp).
        hyperopt_space: Nested space for ``HyperOptSearch(space=...)`` (hyperopt).
        points_to_evaluate: The enumerated grid, only active parameters per point (grid).
        num_points: Number of grid points (grid).

    """

    param_space: dict[str, Any]
    optuna_space: Callable[[Any], dict[str, Any] | None] | None = None
    hyperopt_space: dict[str, Any] | None = None
    points_to_evaluate: list[dict[str, Any]] | None = None
    num_points: int | None = None


def searcher_space(space: SearchSpace, method: str) -> SearcherSpace:
    """Convert ``space`` for search ``method`` so that only active parameters are sampled.

    Args:
        space: A validated search space.
        method: ``"random"``, ``"grid"``, ``"tpe"``, ``"gp"`` or ``"hyperopt"``. Any other
            name gets flat Ray Tune domains (Ray converts them for its searcher), which needs
            an unconditional space.

    Returns:
        The pieces for the Tuner and the searcher; see :class:`SearcherSpace`.

    Raises:
        SearchSpaceError: Naming the parameter, if it cannot be searched with ``method``.

    """
    method = method.strip().lower()
    if method == "grid":
        points = enumerate_grid(space)
        return SearcherSpace(
            param_space=_grid_placeholders(points),
            points_to_evaluate=points,
            num_points=len(points),
        )
    if method in ("tpe", "gp"):
        return SearcherSpace(param_space={}, optuna_space=optuna_space(space, method))
    if method == "hyperopt":
        # HyperOpt is an optional dependency: import it only when it is the chosen searcher.
        from search_spaces.to_hyperopt import hyperopt_space

        return SearcherSpace(param_space={}, hyperopt_space=hyperopt_space(space, method))
    return SearcherSpace(param_space=to_tune_domains(space, method))


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
    """Return the number of grid points (trials per sample) of ``space`` under ``method: grid``.

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
