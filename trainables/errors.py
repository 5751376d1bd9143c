"""Errors a trial raises: one that fails the trial for good, and one for a bad hyperparameter.

Ray Tune retries a trial that raises (``fault_tolerance.max_failures``), which is right for a
crash (a lost node, an out-of-memory kill) and wrong for a trial that can never succeed: a
hyperparameter value no optimiser accepts fails the same way on every retry. The adapter ends a
trial that raises :class:`FailedTrialError` (or any other user-input error) at once, as failed,
with the reason in MLflow, and the search goes on; every other exception is still retried.
"""

from __future__ import annotations

from search_spaces.errors import UserInputError


class FailedTrialError(Exception):
    """Raised when a trial cannot succeed: it ends as failed with this reason, without a retry.

    Raise it from a trainable (or the user's own code) for a deterministic failure, such as a
    combination of hyperparameters the model cannot be built with.
    """


class UserCodeError(UserInputError, FailedTrialError):
    """The user's own code broke the trainable contract.

    It does not import, has the wrong signature, raised, returned the wrong type, or never
    reported the sweep's metric. Before a sweep (``tunepipe validate``, planning) it is a
    user-input error (exit code 2); inside a trial it fails that trial without a retry.
    """


class HyperparameterError(UserInputError, FailedTrialError):
    """A hyperparameter value a trainable cannot use; names the key, the value and the fix.

    Raised by the framework trainables' settings readers. Before a sweep it is a user-input error
    like any other (exit code 2); inside a trial it fails that trial without a retry.
    """
