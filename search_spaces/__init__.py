"""Search spaces: YAML files of typed, optionally conditional hyperparameter specs.

Load a file with :func:`load_search_space`, then call :func:`searcher_space` with the searcher's
space form to get what the Tuner and the searcher need (only active parameters are ever
sampled), and :meth:`SearchSpace.active` to keep a trial config's active parameters.
:func:`to_tune_domains` returns a flat ``param_space`` of Ray Tune domains.
"""

from __future__ import annotations

from search_spaces.condition import Condition
from search_spaces.convert import (
    SPACE_FORMS,
    SearcherSpace,
    flatten_sample,
    grid_size,
    searcher_space,
    to_tune_domains,
)
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
    "SPACE_FORMS",
    "CategoricalSpec",
    "Condition",
    "ConstantSpec",
    "GridSpec",
    "IntSpec",
    "LogIntSpec",
    "LogUniformSpec",
    "ParamSpec",
    "QuantizedSpec",
    "Scalar",
    "SearchSpace",
    "SearcherSpace",
    "UniformSpec",
    "flatten_sample",
    "grid_size",
    "load_search_space",
    "parse_search_space",
    "searcher_space",
    "to_tune_domains",
]
