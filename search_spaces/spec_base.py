"""Building blocks of the parameter specs: value types, the shared base model and bound rules.

Kept apart from :mod:`search_spaces.spec` (one model per ``type``) so each stays short. Rules
raise :class:`SearchSpaceError` with a key *relative* to the parameter (e.g. ``"low"``).
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from search_spaces.condition import Condition, parse_when
from search_spaces.errors import SearchSpaceError

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


class Spec(BaseModel):
    """Base of every parameter spec: frozen, no unknown keys, rules checked on creation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: A one-line example shown in error messages as part of the fix.
    EXAMPLE: ClassVar[str]

    #: Active only under some values of a parent parameter (``None``: always active).
    when: Annotated[Condition | None, BeforeValidator(parse_when)] = None

    def _rules(self) -> None:
        """Raise :class:`SearchSpaceError` if the values break a rule of this type."""

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        self._rules()
        return self

    def default(self) -> Scalar:
        """Return one valid value of this parameter (used for dry runs)."""
        raise NotImplementedError


def require_order(low: float, high: float, *, inclusive: bool) -> None:
    """Raise (keyed ``low``) unless ``low < high``, or ``low <= high`` when ``inclusive``."""
    if (low > high) if inclusive else (low >= high):
        raise SearchSpaceError(
            f"low must be {'<=' if inclusive else '<'} high, got low={low}, high={high}",
            fix="swap or widen the bounds; for a single value use type: constant",
            key="low",
        )


def require_min(low: float, minimum: str, ok: bool) -> None:
    """Raise (keyed ``low``) unless ``ok``: ``low`` must be ``minimum`` on a log scale."""
    if not ok:
        raise SearchSpaceError(
            f"low must be {minimum} on a log scale, got low={low}",
            fix="use a positive lower bound, or a non-log type (uniform/int)",
            key="low",
        )
