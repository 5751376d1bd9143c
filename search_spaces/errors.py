"""The error vocabulary every layer shares, and the search-space error.

A :class:`UserInputError` is raised for bad input (config, search space, hyperparameters, data)
*before* any cluster work starts where that can be known. Its message is one line naming the
file, the key, the rule that was broken and the fix, so the CLI can print it as it is and exit
with code 2 instead of showing a traceback.

The base class sits here, in the lowest layer (``search_spaces`` <- ``trainables`` <-
``pipelines``), so that each layer can raise its own subclass without importing upwards:
:class:`SearchSpaceError` here, ``trainables.errors.HyperparameterError`` and
``pipelines.errors.ConfigError`` / ``DataError`` above.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class UserInputError(ValueError):
    """Bad input from the user: a config, search-space or data problem they can fix.

    Attributes:
        source: File the problem is in (or a short description such as ``"--set"``), if known.
        key: Dotted key inside that file, if the problem belongs to one key.
        rule: What is wrong, echoing the offending value.
        fix: What to do about it.

    """

    def __init__(
        self,
        rule: str,
        *,
        fix: str,
        source: str | Path | None = None,
        key: str | None = None,
    ) -> None:
        self.source = str(source) if source is not None else None
        self.key = key
        self.rule = rule
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """Return the message as a single line: ``file: key: rule. Fix: fix``."""
        where = ": ".join(part for part in (self.source, self.key) if part)
        prefix = f"{where}: " if where else ""
        rule = self.rule.rstrip(".")
        return printable_line(f"{prefix}{rule}. Fix: {self.fix}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors raised inside a trial are pickled back to the driver; the default reduction
        # would call __init__ with the message only and lose the keyword-only fields.
        return (_rebuild, (type(self), self.rule, self.fix, self.source, self.key))

    def with_source(self, source: str | Path) -> UserInputError:
        """Return a copy that names ``source`` (used when the file is known only higher up)."""
        return type(self)(self.rule, fix=self.fix, source=source, key=self.key)


def printable_line(text: str) -> str:
    """Return ``text`` as one line a terminal shows as it is.

    Messages echo what the user wrote, which may be anything: every kind of line break
    (carriage return, the Unicode line separator, ...) becomes a space and other control
    characters (an escape sequence from a binary file) their backslash escape, so the message
    stays one inert line.
    """
    flat = " ".join(text.splitlines())
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in flat)


def _rebuild(
    cls: type[UserInputError], rule: str, fix: str, source: str | None, key: str | None
) -> UserInputError:
    return cls(rule, fix=fix, source=source, key=key)


class SearchSpaceError(UserInputError):
    """Invalid search-space file."""
