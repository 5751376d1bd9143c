"""A nested HyperOpt space whose ``hp.choice`` branches carry only their active children.

HyperOpt expresses conditions by nesting: ``optimizer`` becomes
``hp.choice("optimizer", [{"optimizer": "sgd", "momentum": ...}, {"optimizer": "adam", ...}])``
and TPE models ``momentum`` only from trials that took the sgd branch. A sample is then nested;
:func:`search_spaces.convert.flatten_sample` turns it back into ``{name: value}``.

HyperOpt conventions handled here and nowhere else: ``hp.loguniform`` takes *log* bounds, and
``quniform`` rounds a uniform draw to a multiple of ``q``, so bounds are widened by just under
half a step on each side: every value in ``[low, high]`` gets an (almost) equal share, the
inclusive ``high`` is reachable and nothing outside the bounds can come out.
"""

from __future__ import annotations

import math
from typing import Any

from hyperopt import hp
from hyperopt.pyll import scope

from search_spaces.rules import check_model_based, parent_values
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

#: Fraction of a step added beyond each bound before rounding (< 0.5 keeps rounding inside).
_MARGIN = 0.499


def hyperopt_space(space: SearchSpace, searcher: str = "hyperopt") -> dict[str, Any]:
    """Return the HyperOpt space for ``HyperOptSearch(space=...)``.

    Unconditional parameters are top-level entries labelled by their name; a parent of
    conditional parameters becomes an ``hp.choice`` of dicts, one per value, each holding the
    parent's own value under its name plus the children active under that value.

    Raises:
        SearchSpaceError: If a parameter is ``type: grid``.

    """
    check_model_based(space, searcher)

    def node(name: str, path: str) -> Any:
        # HyperOpt labels must be unique; a child appears once per branch, so the label
        # carries the branch path, e.g. "momentum[optimizer='sgd']".
        label = f"{name}[{path}]" if path else name
        spec = space.params[name]
        children = space.children(name)
        if not children:
            return _leaf(spec, label)
        options = []
        for value in parent_values(spec) or []:  # rules guarantee a parent has values
            branch_path = f"{path},{name}={value!r}" if path else f"{name}={value!r}"
            option = {name: value}
            for child in children:
                when = space.params[child].when
                if when is not None and when.matches(value):
                    option[child] = node(child, branch_path)
            options.append(option)
        if isinstance(spec, ConstantSpec):
            return options[0]  # nothing to choose: the branch is always taken
        return hp.choice(label, options)

    return {name: node(name, "") for name, spec in space.params.items() if spec.when is None}


def _leaf(spec: ParamSpec, label: str) -> Any:
    if isinstance(spec, ConstantSpec):
        return spec.value
    if isinstance(spec, CategoricalSpec):
        return hp.choice(label, list(spec.values))
    if isinstance(spec, UniformSpec):
        return hp.uniform(label, spec.low, spec.high)
    if isinstance(spec, LogUniformSpec):
        return hp.loguniform(label, math.log(spec.low), math.log(spec.high))
    if isinstance(spec, QuantizedSpec):
        first, last = spec.multiples()
        margin = _MARGIN * spec.q
        return hp.quniform(label, first - margin, last + margin, spec.q)
    if isinstance(spec, IntSpec):
        return scope.int(hp.quniform(label, spec.low - _MARGIN, spec.high + _MARGIN, 1))
    if isinstance(spec, LogIntSpec):
        low, high = math.log(spec.low - _MARGIN), math.log(spec.high + _MARGIN)
        return scope.int(hp.qloguniform(label, low, high, 1))
    raise AssertionError(f"unhandled spec type {type(spec).__name__}")  # grid: checked before
