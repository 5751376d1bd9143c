"""Small helpers that keep :class:`SearchSpaceError` messages short and helpful."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for a near miss of ``word``, else ``""``."""
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def short(value: object, limit: int = 60) -> str:
    """Return ``repr(value)`` cut to ``limit`` characters, to keep messages on one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
