"""Enumerate the grid of a discrete search space, respecting ``when`` conditions.

Ray's ``grid_search`` multiplies every axis into every point, so a conditional axis (momentum
for sgd only) would also multiply the points where it is inactive (adam x every momentum: the
same adam trial repeated). The grid is therefore enumerated here, each child axis expanded only
under the parent values where it is active, and handed to Ray as ``points_to_evaluate``.
"""

from __future__ import annotations

import math
from typing import Any

from search_spaces.errors import SearchSpaceError
from search_spaces.rules import parent_values
from search_spaces.space import SearchSpace
from search_spaces.spec import IntSpec, ParamSpec, Scalar

#: Largest ``type: int`` range that ``method: grid`` expands into explicit grid points.
MAX_GRID_INT_VALUES = 32
#: Largest grid enumerated; beyond this the sweep could never finish anyway.
MAX_GRID_POINTS = 100_000


def grid_axis(spec: ParamSpec, *, source: str, key: str) -> list[Scalar]:
    """Return the values ``spec`` takes in a grid (a constant is a one-value axis).

    Raises:
        SearchSpaceError: If ``spec`` is continuous, or an int range is too long.

    """
    values = parent_values(spec)  # categorical, grid and constant: their listed values
    if values is not None:
        return values
    if isinstance(spec, IntSpec) and spec.high - spec.low + 1 <= MAX_GRID_INT_VALUES:
        return list(range(spec.low, spec.high + 1))
    if isinstance(spec, IntSpec):
        rule = (
            f"type: int range low={spec.low}, high={spec.high} has {spec.high - spec.low + 1} "
            f"values, too many to grid-search (limit {MAX_GRID_INT_VALUES})"
        )
    else:
        rule = f"type: {spec.type} is continuous and cannot be grid-searched"
    raise SearchSpaceError(
        rule,
        fix="use type: grid/categorical with explicit values, or another search method",
        source=source,
        key=key,
    )


def _axes(space: SearchSpace) -> dict[str, list[Scalar]]:
    # Every parameter is checked, even one active only in some branches: it would be sampled.
    return {
        name: grid_axis(spec, source=space.source, key=f"parameters.{name}")
        for name, spec in space.params.items()
    }


def count_grid(space: SearchSpace) -> int:
    """Return the number of points of the conditional grid, without enumerating it.

    A parameter's subtree has, per value, the product of its active children's subtrees; the
    grid is the product over the unconditional parameters.

    Raises:
        SearchSpaceError: If a parameter cannot be grid-searched.

    """
    axes = _axes(space)

    def subtree(name: str) -> int:
        when_children = [(c, space.params[c].when) for c in space.children(name)]
        return sum(
            math.prod(subtree(c) for c, when in when_children if when and when.matches(value))
            for value in axes[name]
        )

    return math.prod(subtree(n) for n, spec in space.params.items() if spec.when is None)


def enumerate_grid(space: SearchSpace) -> list[dict[str, Any]]:
    """Return every grid point, each holding only the parameters active at that point.

    Points are in file order with the first parameter varying slowest, so the same space
    always gives the same list.

    Raises:
        SearchSpaceError: If a parameter cannot be grid-searched, or the grid is too large.

    """
    axes = _axes(space)
    size = count_grid(space)
    if size > MAX_GRID_POINTS:
        raise SearchSpaceError(
            f"the grid has {size} points, more than the limit of {MAX_GRID_POINTS}",
            fix="list fewer values, or use search.method: random/tpe",
            source=space.source,
            key="parameters",
        )
    points: list[dict[str, Any]] = [{}]
    # Parents precede children, so each point already holds every parent's (active) value.
    for name, axis in axes.items():
        expanded: list[dict[str, Any]] = []
        for point in points:
            if space.is_active(name, point):
                expanded.extend({**point, name: value} for value in axis)
            else:
                expanded.append(point)  # inactive here: this point is not multiplied
        points = expanded
    return points
