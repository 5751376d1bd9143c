"""Calling the user's own code inside the trainable contract, and saying clearly when it breaks.

A user's model builder is called as ``build(hp, spec)``; anything it raises, or a return value
of the wrong type, becomes a :class:`~trainables.errors.UserCodeError` that names the builder
and the rule: before a sweep that is a one-line error (exit code 2), inside a trial it fails the
trial without a retry (a builder that breaks for one set of hyperparameters breaks every time).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from trainables.errors import FailedTrialError, UserCodeError
from trainables.model_settings import build_spec
from trainables.protocol import DataSpec

#: The config key that names the user's code (errors point at it).
TARGET_KEY = "trainable.target"


def short_error(exc: BaseException, limit: int = 400) -> str:
    """Return ``Type: message`` on one line, its middle cut when long.

    Framework errors carry whole stack traces in their message; the cause is usually at the end.
    """
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    if len(text) <= limit:
        return text
    return f"{text[: limit // 3]} ... {text[-(2 * limit) // 3 :]}"


def code_name(code: Any) -> str:
    """Return ``module:name`` of a function or class, for messages."""
    module = getattr(code, "__module__", None) or "?"
    return f"{module}:{getattr(code, '__qualname__', type(code).__name__)}"


def build_user_model(
    build: Callable[..., Any],
    hparams: Mapping[str, Any],
    data: DataSpec,
    expected: type | tuple[type, ...],
    what: str,
) -> Any:
    """Call ``build(hp, spec)`` and check it returned an instance of ``expected``.

    Args:
        build: The user's model builder.
        hparams: The trial's hyperparameters (the builder gets a copy).
        data: The prepared data's description; the builder gets a
            :class:`~trainables.protocol.BuildSpec` with the outputs the loss needs.
        expected: The model type(s) the framework's loop can train.
        what: That type in words, for messages (``"torch.nn.Module"``).

    Raises:
        UserCodeError: If the builder raises, or returns something else.

    """
    name = code_name(build)
    try:
        model = build(dict(hparams), build_spec(data, hparams))
    except FailedTrialError:
        raise  # the user's own "this trial cannot succeed", or a bad hyperparameter
    except Exception as exc:
        raise UserCodeError(
            f"the model builder {name} raised {short_error(exc)}",
            key=TARGET_KEY,
            fix="fix the builder; it is called as build(hp: dict, spec) and returns a model",
        ) from exc
    if not isinstance(model, expected):
        raise UserCodeError(
            f"the model builder {name} returned a {type(model).__name__}, not a {what}",
            key=TARGET_KEY,
            fix=f"return a {what} from build(hp, spec)",
        )
    return model
