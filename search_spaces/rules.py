"""Rules between parameters: the ``when`` parent of each conditional parameter.

A parent must exist, be declared before its child (so one pass in file order always knows the
parent's value, and cycles are impossible), and be discrete, since a condition lists values.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from search_spaces.condition import same_value
from search_spaces.errors import SearchSpaceError
from search_spaces.messages import did_you_mean, short
from search_spaces.space import SearchSpace
from search_spaces.spec import CategoricalSpec, ConstantSpec, GridSpec, ParamSpec, Scalar

#: Types whose values a ``when`` clause can list.
PARENT_TYPES = ("categorical", "grid", "constant")


def parent_values(spec: ParamSpec) -> list[Scalar] | None:
    """Return the values a parent can take, or ``None`` if ``spec`` cannot be a parent."""
    if isinstance(spec, CategoricalSpec | GridSpec):
        return list(spec.values)
    if isinstance(spec, ConstantSpec):
        return [spec.value]
    return None


def check_conditions(params: Mapping[str, ParamSpec], *, source: str) -> None:
    """Check every ``when`` clause against the other parameters.

    Args:
        params: Parameter name -> spec, in file order.
        source: The file, named in errors.

    Raises:
        SearchSpaceError: Keyed ``parameters.<child>.when``, for the first broken rule.

    """
    names = list(params)
    for index, (name, spec) in enumerate(params.items()):
        if spec.when is None:
            continue
        parent = spec.when.parent
        above = names[:index]
        fail = partial(_error, source=source, key=f"parameters.{name}.when")
        if parent == name:
            raise fail(f"{name!r} cannot depend on itself", "name another, discrete parameter")
        if parent not in params:
            raise fail(
                f"unknown parent {parent!r}{did_you_mean(parent, above)}",
                f"name a parameter declared above {name!r}: {', '.join(above) or 'none yet'}",
            )
        if parent not in above:
            raise fail(
                f"parent {parent!r} is declared after {name!r}",
                f"move {parent!r} above {name!r} in the file (parents come first)",
            )
        values = parent_values(params[parent])
        if values is None:
            raise fail(
                f"parent {parent!r} is type: {params[parent].type}, which has no values to match",
                f"make {parent!r} one of type {', '.join(PARENT_TYPES)}, or drop the when",
            )
        for value in spec.when.values:
            if not any(same_value(value, allowed) for allowed in values):
                raise fail(
                    f"{short(value)} is not a value of parent {parent!r} {short(values)}",
                    f"use values of {parent!r}: {', '.join(map(str, values))}",
                )


def _error(rule: str, fix: str, *, source: str, key: str) -> SearchSpaceError:
    return SearchSpaceError(rule, fix=fix, source=source, key=key)


def check_model_based(space: SearchSpace, searcher: str) -> None:
    """Reject ``type: grid``, which a model-based searcher (TPE, GP, HyperOpt) cannot model.

    Raises:
        SearchSpaceError: Naming the first ``type: grid`` parameter.

    """
    for name, spec in space.params.items():
        if isinstance(spec, GridSpec):
            # Ray would fail late, after the cluster is up, so refuse it here.
            raise SearchSpaceError(
                f"type: grid is not supported by search method {searcher!r}",
                fix="use type: categorical, or search.method: grid/random",
                source=space.source,
                key=f"parameters.{name}",
            )
