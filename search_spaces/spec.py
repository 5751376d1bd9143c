"""Typed parameter specs: one frozen pydantic model per ``type`` in a search-space file.

Each model checks its own rules and raises :class:`SearchSpaceError` with a key *relative* to the
parameter (e.g. ``"low"``); :mod:`search_spaces.loader` adds the dotted path and the file name.
Specs know nothing about Ray: :mod:`search_spaces.convert` owns that mapping.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from pipelines.errors import SearchSpaceError

Scalar = str | bool | int | float


def _number(value: object) -> object:
    # PyYAML follows YAML 1.1, which reads an unquoted ``1e-4`` (no dot) as a *string*; accept
    # numeric strings so that common spelling works, and reject anything else with a clear rule.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise SearchSpaceError(
                f"expected a number, got {value!r}", fix="write a number such as 0.01 or 1.0e-3"
            ) from None
    return value


def _scalar(value: object) -> object:
    # Checked up front so a bad value gives one clear error, not one per member of the union.
    if not isinstance(value, Scalar) or (isinstance(value, float) and not math.isfinite(value)):
        raise SearchSpaceError(
            f"expected a str, int, finite float or bool, got {value!r}",
            fix="use plain scalar values (null, lists and mappings are not supported)",
        )
    return value


#: Finite float; ints are accepted, bools are not (strict mode), numeric strings are converted.
Float = Annotated[float, BeforeValidator(_number), Field(strict=True, allow_inf_nan=False)]
#: Integer; strict so that ``8.5`` or ``true`` is an error rather than silently truncated.
Int = Annotated[int, Field(strict=True)]
#: One categorical/grid/constant value; the check rejects None, lists, mappings and NaN.
ScalarValue = Annotated[Scalar, BeforeValidator(_scalar)]
Values = Annotated[list[ScalarValue], Field(strict=True)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: A one-line example shown in error messages as part of the fix.
    EXAMPLE: ClassVar[str]

    def _rules(self) -> None:
        """Raise :class:`SearchSpaceError` if the values break a rule of this type."""

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        self._rules()
        return self

    def default(self) -> Scalar:
        """Return one valid value of this parameter (used for dry runs)."""
        raise NotImplementedError


def _require_order(low: float, high: float, *, inclusive: bool) -> None:
    if (low > high) if inclusive else (low >= high):
        raise SearchSpaceError(
            f"low must be {'<=' if inclusive else '<'} high, got low={low}, high={high}",
            fix="swap or widen the bounds; for a single value use type: constant",
            key="low",
        )


def _require_min(low: float, minimum: str, ok: bool) -> None:
    if not ok:
        raise SearchSpaceError(
            f"low must be {minimum} on a log scale, got low={low}",
            fix="use a positive lower bound, or a non-log type (uniform/int)",
            key="low",
        )


class _FloatRange(_Spec):
    low: Float
    high: Float


class _IntRange(_Spec):
    low: Int
    high: Int


class UniformSpec(_FloatRange):
    """A float drawn uniformly from ``[low, high)``."""

    EXAMPLE = "{type: uniform, low: 0.0, high: 0.5}"
    type: Literal["uniform"]

    def _rules(self) -> None:
        _require_order(self.low, self.high, inclusive=False)

    def default(self) -> float:
        """Return the midpoint."""
        return (self.low + self.high) / 2


class LogUniformSpec(_FloatRange):
    """A positive float drawn log-uniformly from ``[low, high)``."""

    EXAMPLE = "{type: loguniform, low: 1.0e-4, high: 1.0e-1}"
    type: Literal["loguniform"]

    def _rules(self) -> None:
        _require_min(self.low, "> 0", self.low > 0)
        _require_order(self.low, self.high, inclusive=False)

    def default(self) -> float:
        """Return the geometric mean, the midpoint on a log scale."""
        return math.sqrt(self.low * self.high)


class IntSpec(_IntRange):
    """An integer drawn uniformly from ``[low, high]`` (both bounds inclusive)."""

    EXAMPLE = "{type: int, low: 8, high: 32}"
    type: Literal["int"]

    def _rules(self) -> None:
        _require_order(self.low, self.high, inclusive=True)

    def default(self) -> int:
        """Return the midpoint, rounded."""
        return round((self.low + self.high) / 2)


class LogIntSpec(_IntRange):
    """An integer drawn log-uniformly from ``[low, high]`` (both inclusive, ``low >= 1``)."""

    EXAMPLE = "{type: logint, low: 16, high: 512}"
    type: Literal["logint"]

    def _rules(self) -> None:
        _require_min(self.low, ">= 1", self.low >= 1)
        _require_order(self.low, self.high, inclusive=True)

    def default(self) -> int:
        """Return the geometric mean, rounded."""
        return round(math.sqrt(self.low * self.high))


class QuantizedSpec(_Spec):
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
        _require_order(self.low, self.high, inclusive=False)
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

    def default(self) -> float:
        """Return the multiple of ``q`` nearest the midpoint (always inside the bounds)."""
        return round((self.low + self.high) / 2 / self.q) * self.q


class _Discrete(_Spec):
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


class ConstantSpec(_Spec):
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
PARAM_TYPES: dict[str, type[_Spec]] = {
    "uniform": UniformSpec,
    "loguniform": LogUniformSpec,
    "int": IntSpec,
    "logint": LogIntSpec,
    "quantized": QuantizedSpec,
    "categorical": CategoricalSpec,
    "constant": ConstantSpec,
    "grid": GridSpec,
}
