"""Turn a :class:`SearchSpace` into a Ray Tune ``param_space``.

This is the only module that knows Ray's conventions. Notably Ray's integer upper bounds are
*exclusive* while ours are inclusive, so the ``+ 1`` lives here and nowhere else.
"""

from __future__ import annotations

import math
from typing import Any

from ray import tune

from pipelines.errors import SearchSpaceError
from search_spaces.space import SearchSpace
from search_spaces.spec import (
    CategoricalSpec,
    ConstantSpec,
    GridSpec,
    IntSpec,
    LogIntSpec,
    LogUniformSpec,
    ParamSpec,
    QuantizedSpec,
    UniformSpec,
)

#: Largest ``type: int`` range that ``method: grid`` expands into explicit grid points.
MAX_GRID_INT_VALUES = 32


def to_tune_domains(space: SearchSpace, method: str) -> dict[str, Any]:
    """Return the Ray Tune ``param_space`` for ``space`` searched with ``method``.

    Args:
        space: A validated search space.
        method: Searcher name. ``"grid"`` needs every parameter discrete (categorical values
            become grid points too); ``"random"`` accepts everything; any other (model-based)
            searcher, such as ``"tpe"``, rejects ``type: grid``.

    Returns:
        Parameter name -> Ray domain, ``{"grid_search": [...]}`` or plain constant, in file order.

    Raises:
        SearchSpaceError: Naming the parameter, if it cannot be searched with ``method``.

    """
    method = method.strip().lower()
    return {
        name: _domain(spec, method, space.source, f"parameters.{name}")
        for name, spec in space.params.items()
    }


def grid_size(space: SearchSpace) -> int:
    """Return the number of grid points (trials per sample) of ``space`` under ``method: grid``.

    Raises:
        SearchSpaceError: If a parameter cannot be grid-searched.

    """
    domains = to_tune_domains(space, "grid")
    # Constants are plain scalars, never dicts, so only grid_search entries count.
    return math.prod(
        len(d["grid_search"])
        for d in domains.values()
        if isinstance(d, dict) and "grid_search" in d
    )


def _domain(spec: ParamSpec, method: str, source: str, key: str) -> Any:
    if isinstance(spec, ConstantSpec):
        return spec.value
    if method == "grid":
        return _grid_domain(spec, source, key)
    if isinstance(spec, GridSpec):
        if method != "random":
            # Model-based searchers (TPE, ...) cannot model a grid_search entry; Ray would fail
            # late, after the cluster is up, so refuse it here.
            raise SearchSpaceError(
                f"type: grid is not supported by search method {method!r}",
                fix="use type: categorical, or search.method: grid/random",
                source=source,
                key=key,
            )
        return tune.grid_search(list(spec.values))
    if isinstance(spec, CategoricalSpec):
        return tune.choice(list(spec.values))
    if isinstance(spec, UniformSpec):
        return tune.uniform(spec.low, spec.high)
    if isinstance(spec, LogUniformSpec):
        return tune.loguniform(spec.low, spec.high)
    if isinstance(spec, IntSpec):
        return tune.randint(spec.low, spec.high + 1)  # Ray's upper bound is exclusive
    if isinstance(spec, LogIntSpec):
        return tune.lograndint(spec.low, spec.high + 1)  # Ray's upper bound is exclusive
    if isinstance(spec, QuantizedSpec):
        return tune.quniform(spec.low, spec.high, spec.q)
    raise AssertionError(f"unhandled spec type {type(spec).__name__}")  # a bug, not user input


def _grid_domain(spec: ParamSpec, source: str, key: str) -> Any:
    if isinstance(spec, GridSpec | CategoricalSpec):
        return tune.grid_search(list(spec.values))
    if isinstance(spec, IntSpec) and spec.high - spec.low + 1 <= MAX_GRID_INT_VALUES:
        return tune.grid_search(list(range(spec.low, spec.high + 1)))
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
