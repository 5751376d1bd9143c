"""Errors a user can act on, kept apart from bugs: the whole vocabulary, in one import.

A :class:`UserInputError` (defined in the lowest layer, :mod:`search_spaces.errors`, so every
layer can raise one) is raised for bad input *before* any cluster work starts. Its message is one
line naming the file, the key, the rule that was broken and the fix, so the CLI prints it as it is
and exits with code 2 instead of showing a traceback. Each layer adds its own kinds:
:class:`SearchSpaceError`, :class:`~trainables.errors.HyperparameterError` and the two below.
"""

from __future__ import annotations

from search_spaces.errors import SearchSpaceError, UserInputError
from trainables.errors import FailedTrialError, HyperparameterError

__all__ = [
    "ConfigError",
    "DataError",
    "FailedTrialError",
    "HyperparameterError",
    "SearchSpaceError",
    "UserInputError",
]


class ConfigError(UserInputError):
    """Invalid experiment configuration."""


class DataError(UserInputError):
    """Missing, empty or malformed data."""
