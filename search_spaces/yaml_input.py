"""A user's YAML file read within bounds: size, encoding, nesting and alias expansion.

Experiment configs and search spaces are a few kilobytes of shallow mappings. Anything far
outside that is a wrong file (a binary, a data file, a generated monster), and reading it
unbounded fails badly: a 50 MB file takes minutes to parse, YAML nested thousands deep
overflows the parser's recursion, and a few nested aliases (``&a [*b, *b, ...]``) expand to
billions of values for the validators downstream. Each limit turns that into one
:class:`~search_spaces.errors.UserInputError` line; the caller chooses the subclass and names
the file through ``error``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from search_spaces.errors import UserInputError

#: Largest file read, in bytes; the bundled configs and spaces are under 4 kB.
MAX_BYTES = 1_000_000
#: Deepest nesting of mappings and lists; real files nest about 5 deep.
MAX_DEPTH = 50
#: Most values counted with every alias expanded; real files hold a few hundred.
MAX_VALUES = 100_000

_FLOW_BRACKETS = re.compile(r"[\[\]{}]")

#: Builds the caller's error from a rule and a fix (the caller adds file and error class).
ErrorFactory = Callable[[str, str], UserInputError]


def read_yaml_text(path: Path, error: ErrorFactory) -> str:
    """Return the text of ``path``, refusing files too big to be a config or not UTF-8.

    Raises:
        FileNotFoundError: If there is no such file (callers word that themselves).
        UserInputError: From ``error``, for an unreadable, oversized or non-UTF-8 file.

    """
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise error(
                f"the file is {size:,} bytes, more than the {MAX_BYTES:,} a YAML config may be",
                "point at the YAML file itself, not at a data or binary file",
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(
            f"cannot read the file: {exc.strerror or exc}", "check its permissions"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            "point at a YAML text file; save it as UTF-8 if it is one",
        ) from None


def parse_yaml(text: str, loader: type[yaml.SafeLoader], error: ErrorFactory) -> Any:
    """Parse ``text`` with ``loader`` (a safe loader) and check the result's shape.

    Raises:
        yaml.YAMLError: For invalid YAML (callers word it with line and column).
        UserInputError: From ``error``, for nesting or alias expansion beyond the limits.

    """
    _check_flow_depth(text, error)
    try:
        data = yaml.load(text, Loader=loader)  # safe: ``loader`` is a SafeLoader subclass
    except RecursionError:
        # PyYAML composes nested nodes recursively; a limit here names the problem instead.
        raise _too_deep(error) from None
    check_shape(data, error)
    return data


def _check_flow_depth(text: str, error: ErrorFactory) -> None:
    """Refuse ``[[[...`` or ``{{{...`` nested beyond :data:`MAX_DEPTH` before PyYAML scans it.

    PyYAML's scanner takes time quadratic in the depth of flow collections (3,000 deep: about a
    second; the 1 MB limit allows 500,000), so counting brackets first is what keeps a wrong
    file fast. Brackets inside quoted strings count too; a closing one never below zero.
    """
    depth = 0
    for match in _FLOW_BRACKETS.finditer(text):
        depth = depth + 1 if match.group() in "[{" else max(depth - 1, 0)
        if depth > MAX_DEPTH:
            raise _too_deep(error)


def check_shape(data: Any, error: ErrorFactory) -> None:
    """Refuse data nested deeper than :data:`MAX_DEPTH` or with over :data:`MAX_VALUES` values.

    The walk is iterative and counts a shared (aliased) value each time it appears, so it stops
    early on an alias bomb instead of expanding it.

    Raises:
        UserInputError: From ``error``, naming the limit that was passed.

    """
    stack: list[tuple[Any, int]] = [(data, 1)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise error(
                f"the file holds more than {MAX_VALUES:,} values (counting every alias use)",
                "write the values out; a config needs a few hundred at most",
            )
        if isinstance(value, dict):
            children: list[Any] = [*value.keys(), *value.values()]
        elif isinstance(value, list | tuple):
            children = list(value)
        else:
            continue
        if children and depth >= MAX_DEPTH:
            raise _too_deep(error)
        stack.extend((child, depth + 1) for child in children)


def _too_deep(error: ErrorFactory) -> UserInputError:
    return error(
        f"mappings and lists are nested more than {MAX_DEPTH} deep",
        "flatten the file; a config nests a few levels at most",
    )
