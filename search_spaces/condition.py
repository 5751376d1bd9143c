"""The ``when`` clause of a conditional parameter: active only under some values of a parent.

``momentum: {type: uniform, low: 0.0, high: 0.95, when: {optimizer: [sgd, rmsprop]}}`` parses
into ``Condition(parent="optimizer", values=("sgd", "rmsprop"))``. This module checks only the
clause's own shape; rules that need the other parameters (the parent exists, comes first, is
discrete and has those values) live in :mod:`search_spaces.rules`.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, ConfigDict

from search_spaces.errors import SearchSpaceError
from search_spaces.messages import short

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXAMPLE = "when: {optimizer: [sgd, rmsprop]}"


def same_value(a: object, b: object) -> bool:
    """Return whether two categorical values are the same choice.

    Plain ``==`` would make ``True`` match ``1``; a bool only matches a bool. ``1`` and ``1.0``
    do match, so a value that went through JSON or a searcher as a float still counts.
    """
    return isinstance(a, bool) == isinstance(b, bool) and a == b


class Condition(BaseModel):
    """A parameter is active only when ``parent`` (a discrete parameter) takes one of ``values``.

    Attributes:
        parent: Name of the parent parameter, declared earlier in the same file.
        values: The parent values under which the parameter is active.

    """

    model_config = ConfigDict(frozen=True)

    parent: str
    values: tuple[str | bool | int | float, ...]

    def matches(self, value: object) -> bool:
        """Return whether the parent taking ``value`` makes the parameter active."""
        return any(same_value(value, allowed) for allowed in self.values)


def parse_when(raw: object) -> object:
    """Turn ``{parent: value}`` or ``{parent: [values]}`` into a :class:`Condition`.

    Used as a pydantic ``BeforeValidator``, so errors carry a key relative to ``when``.

    Raises:
        SearchSpaceError: If ``raw`` is not a one-key mapping of a name to scalar values.

    """
    if raw is None or isinstance(raw, Condition):
        return raw
    if not isinstance(raw, dict) or len(raw) != 1:
        raise SearchSpaceError(
            f"when must map exactly one parent to its values, got {short(raw)}",
            fix=f"write e.g. {_EXAMPLE} (one parent; chain conditions through the parent)",
        )
    ((parent, values),) = raw.items()
    if not isinstance(parent, str) or not _NAME.fullmatch(parent):
        raise SearchSpaceError(
            f"parent name {parent!r} is not an identifier",
            fix=f"name a parameter declared above, e.g. {_EXAMPLE}",
        )
    listed = values if isinstance(values, list) else [values]
    if not listed:
        raise SearchSpaceError(
            "when lists no parent values", fix=f"list at least one value, e.g. {_EXAMPLE}"
        )
    for value in listed:
        scalar = isinstance(value, str | bool | int | float)
        if not scalar or (isinstance(value, float) and not math.isfinite(value)):
            raise SearchSpaceError(
                f"parent value must be a str, int, finite float or bool, got {short(value)}",
                fix=f"list plain values of {parent!r}, e.g. {_EXAMPLE}",
            )
    unique = [v for i, v in enumerate(listed) if not any(same_value(v, u) for u in listed[:i])]
    return Condition(parent=parent, values=tuple(unique))
