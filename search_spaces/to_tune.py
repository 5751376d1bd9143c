"""Flat Ray Tune domains for a search space: ``Tuner(param_space=...)`` as Ray expects it.

This is the only module that knows Ray's domain conventions. Notably Ray's integer upper bounds
are *exclusive* while ours are inclusive, so the ``+ 1`` lives here and nowhere else. Flat
domains cannot express ``when``; conditional spaces get them only in the ``independent`` form
(each parameter drawn on its own, as random search does), whose trials drop inactive values with
:meth:`SearchSpace.active`.

Three space forms use flat domains: ``independent`` (every type, conditions allowed),
``grid`` (every parameter discrete, as ``grid_search`` axes) and ``tune`` (for a model-based
searcher that Ray's adapter converts: no ``type: grid``, no conditions).
"""

from __future__ import annotations

from typing import Any

from ray import tune

from search_spaces.errors import SearchSpaceError
from search_spaces.grid import grid_axis
from search_spaces.rules import check_model_based
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

FLAT_FORMS = ("independent", "grid", "tune")


def to_tune_domains(space: SearchSpace, form: str, searcher: str | None = None) -> dict[str, Any]:
    """Return the flat Ray Tune ``param_space`` for ``space`` in space form ``form``.

    Args:
        space: A validated search space.
        form: ``"grid"`` needs every parameter discrete (categorical values become grid points
            too); ``"independent"`` accepts everything; ``"tune"`` (a model-based searcher
            through Ray's adapter) rejects ``type: grid``.
        searcher: The searcher's name, for error messages (default: the form).

    Returns:
        Parameter name -> Ray domain, ``{"grid_search": [...]}`` or plain constant, in file order.

    Raises:
        SearchSpaceError: Naming the parameter, if it cannot be searched in ``form``; also for a
            conditional space unless ``form`` is ``"independent"``, since flat domains would
            sample inactive parameters into the searcher's model or multiply the grid.

    """
    if form not in FLAT_FORMS:
        raise ValueError(f"flat Tune domains come in the forms {FLAT_FORMS}, not {form!r}")
    label = searcher or form
    _check_flat(space, form, label)
    if form == "grid":
        return {
            name: spec.value
            if isinstance(spec, ConstantSpec)
            else tune.grid_search(grid_axis(spec, source=space.source, key=f"parameters.{name}"))
            for name, spec in space.params.items()
        }
    if form == "tune":
        check_model_based(space, label)
    return {name: _domain(spec) for name, spec in space.params.items()}


def _check_flat(space: SearchSpace, form: str, label: str) -> None:
    for name, spec in space.params.items():
        if spec.when is None:
            continue
        if form != "independent":
            raise SearchSpaceError(
                f"conditional parameters cannot be flat Ray Tune domains for method {label!r}",
                fix="convert with search_spaces.convert.searcher_space(space, form)",
                source=space.source,
                key=f"parameters.{name}.when",
            )
        if isinstance(spec, GridSpec):
            # Under random search a grid_search axis multiplies every trial, including the
            # ones where it is inactive: those would be repeats of the same configuration.
            raise SearchSpaceError(
                "a conditional type: grid parameter would repeat trials where it is inactive",
                fix="use type: categorical, or search.method: grid",
                source=space.source,
                key=f"parameters.{name}",
            )


def _domain(spec: ParamSpec) -> Any:
    if isinstance(spec, ConstantSpec):
        return spec.value
    if isinstance(spec, GridSpec):
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
