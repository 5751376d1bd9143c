"""Search spaces: YAML files of typed hyperparameter specs, converted to Ray Tune domains.

Load a file with :func:`load_search_space`, then call :meth:`SearchSpace.to_tune` with the
searcher name to get the ``param_space`` for ``ray.tune.Tuner``.
"""

from __future__ import annotations

from search_spaces.convert import grid_size, to_tune_domains
from search_spaces.loader import load_search_space, parse_search_space
from search_spaces.space import SearchSpace
from search_spaces.spec import (
    PARAM_TYPES,
    CategoricalSpec,
    ConstantSpec,
    GridSpec,
    IntSpec,
    LogIntSpec,
    LogUniformSpec,
    ParamSpec,
    QuantizedSpec,
    Scalar,
    UniformSpec,
)

__all__ = [
    "PARAM_TYPES",
    "CategoricalSpec",
    "ConstantSpec",
    "GridSpec",
    "IntSpec",
    "LogIntSpec",
    "LogUniformSpec",
    "ParamSpec",
    "QuantizedSpec",
    "Scalar",
    "SearchSpace",
    "UniformSpec",
    "grid_size",
    "load_search_space",
    "parse_search_space",
    "to_tune_domains",
]
