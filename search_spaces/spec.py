"""Typed parameter specs: one frozen pydantic model per ``type`` in a search-space file.

Each model checks its own rules and raises :class:`SearchSpaceError` with a key *relative* to the
parameter (e.g. ``"low"``); :mod:`search_spaces.loader` adds the dotted path and the file name.
Specs know nothing about Ray: :mod:`search_spaces.convert` owns that mapping.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field

from search_spaces.errors import SearchSpaceError
from search_spaces.spec_base import (
    Float,
    Int,
    Scalar,
    ScalarValue,
    Spec,
    Values,
    require_min,
    require_order,
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
    "UniformSpec",
]


class _FloatRange(Spec):
    low: Float
    high: Float


class _IntRange(Spec):
    low: Int
    high: Int


class UniformSpec(_FloatRange):
    """A float drawn uniformly from ``[low, high)``."""

    EXAMPLE = "{type: uniform, low: 0.0, high: 0.5}"
    type: Literal["uniform"]

    def _rules(self) -> None:
        require_order(self.low, self.high, inclusive=False)

    def default(self) -> float:
        """Return the midpoint."""
        return (self.low + self.high) / 2


class LogUniformSpec(_FloatRange):
    """A positive float drawn log-uniformly from ``[low, high)``."""

    EXAMPLE = "{type: loguniform, low: 1.0e-4, high: 1.0e-1}"
    type: Literal["loguniform"]

    def _rules(self) -> None:
        require_min(self.low, "> 0", self.low > 0)
        require_order(self.low, self.high, inclusive=False)

    def default(self) -> float:
        """Return the geometric mean, the midpoint on a log scale."""
        return math.sqrt(self.low * self.high)


class IntSpec(_IntRange):
    """An integer drawn uniformly from ``[low, high]`` (both bounds inclusive)."""

    EXAMPLE = "{type: int, low: 8, high: 32}"
    type: Literal["int"]

    def _rules(self) -> None:
        require_order(self.low, self.high, inclusive=True)

    def default(self) -> int:
        """Return the midpoint, rounded."""
        return round((self.low + self.high) / 2)


class LogIntSpec(_IntRange):
    """An integer drawn log-uniformly from ``[low, high]`` (both inclusive, ``low >= 1``)."""

    EXAMPLE = "{type: logint, low: 16, high: 512}"
    type: Literal["logint"]

    def _rules(self) -> None:
        require_min(self.low, ">= 1", self.low >= 1)
        require_order(self.low, self.high, inclusive=True)

    def default(self) -> int:
        """Return the geometric mean, rounded."""
        return round(math.sqrt(self.low * self.high))


class QuantizedSpec(Spec):
    """A float drawn uniformly from ``[low, high]`` and rounded to a multiple of ``q``."""

    EXAMPLE = "{type: quantized, low: 0.0, high: 0.5, q: 0.1}"
    type: Literal["quantized"]
    low: Float
    high: Float
    q: Float

    def _rules(self) -> None:
        if self.q <= 0:
            raise SearchSpaceError(
                f"q must be > 0, got q={self.q}", fix="use e.g. q: 0.1", key="q"
            )
        require_order(self.low, self.high, inclusive=False)
        first = self._first_multiple()
        if first > self.high and not math.isclose(first, self.high):
            raise SearchSpaceError(
                f"no multiple of q={self.q} lies in [low={self.low}, high={self.high}]",
                fix="use a smaller q or bounds that contain a multiple of q",
                key="q",
            )

    def _first_multiple(self) -> float:
        # Same inward snapping as Ray's Quantized sampler: near-integers count as on the grid.
        scaled = self.low / self.q
        index = round(scaled) if math.isclose(scaled, round(scaled)) else math.ceil(scaled)
        return index * self.q

    def multiples(self) -> tuple[float, float]:
        """Return the first and last multiples of ``q`` inside ``[low, high]``.

        Searchers that step from their lower bound (Optuna) or round to multiples of ``q``
        (HyperOpt) need these instead of ``low``/``high`` to stay on the same grid as Ray's
        ``quniform``. Values are tidied to 12 significant digits so ``3 * 0.1`` is ``0.3``,
        which keeps Optuna's divisibility check of ``(high - low) / q`` exact.
        """
        scaled = self.high / self.q
        index = round(scaled) if math.isclose(scaled, round(scaled)) else math.floor(scaled)
        return _tidy(self._first_multiple()), _tidy(index * self.q)

    def default(self) -> float:
        """Return the multiple of ``q`` nearest the midpoint (always inside the bounds)."""
        return round((self.low + self.high) / 2 / self.q) * self.q


def _tidy(value: float) -> float:
    # Drops binary noise such as 0.30000000000000004 while keeping any scale (1e-9, 1e6).
    return float(f"{value:.12g}")


class _Discrete(Spec):
    values: Values

    def _rules(self) -> None:
        if not self.values:
            raise SearchSpaceError("values is empty", fix="list at least one value", key="values")
        # Compare with the type so that 1, 1.0 and True (equal in Python) count as distinct.
        seen = [(type(v), v) for v in self.values]
        dupes = sorted({repr(v) for i, (t, v) in enumerate(seen) if (t, v) in seen[:i]})
        if dupes:
            raise SearchSpaceError(
                f"values has duplicates: {', '.join(dupes)}",
                fix="list each value once (duplicates skew sampling or repeat grid trials)",
                key="values",
            )

    def default(self) -> Scalar:
        """Return the first value."""
        return self.values[0]


class CategoricalSpec(_Discrete):
    """One of ``values``, drawn uniformly (grid-searched under ``method: grid``)."""

    EXAMPLE = "{type: categorical, values: [sgd, adam]}"
    type: Literal["categorical"]


class GridSpec(_Discrete):
    """Every one of ``values`` is tried (Ray ``grid_search``)."""

    EXAMPLE = "{type: grid, values: [32, 64, 128]}"
    type: Literal["grid"]


class ConstantSpec(Spec):
    """A fixed value, passed to the trainable as it is."""

    EXAMPLE = "{type: constant, value: 0.0}"
    type: Literal["constant"]
    value: ScalarValue

    def default(self) -> Scalar:
        """Return the value."""
        return self.value


ParamSpec = Annotated[
    UniformSpec
    | LogUniformSpec
    | IntSpec
    | LogIntSpec
    | QuantizedSpec
    | CategoricalSpec
    | ConstantSpec
    | GridSpec,
    Field(discriminator="type"),
]

#: The ``type`` vocabulary, in documentation order, mapped to its spec class.
PARAM_TYPES: dict[str, type[Spec]] = {
    "uniform": UniformSpec,
    "loguniform": LogUniformSpec,
    "int": IntSpec,
    "logint": LogIntSpec,
    "quantized": QuantizedSpec,
    "categorical": CategoricalSpec,
    "constant": ConstantSpec,
    "grid": GridSpec,
}
