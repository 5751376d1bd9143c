"""Optimiser hyperparameters, validated once for every framework.

The torch and Keras trainables read the same keys with the same meaning; this module checks them
without importing either framework and hands back an :class:`OptimizerSettings` that each
framework maps onto its own optimiser classes.

Hyperparameters (defaults in brackets):

* ``optimizer``: ``sgd``, ``adagrad``, ``rmsprop``, ``adam`` or ``adamw`` [adam]; ``lr`` [1e-3].
* sgd: ``momentum`` [0], ``nesterov`` [False, needs momentum > 0].
* rmsprop: ``rho`` [0.9], ``momentum`` [0], ``eps`` [1e-7].
* adagrad: ``eps`` [1e-7], ``initial_accumulator_value`` [0.1].
* adam, adamw: ``beta1`` [0.9], ``beta2`` [0.999], ``eps`` [1e-7].
* every optimiser: ``weight_decay`` [0], decoupled (``w <- w * (1 - lr * weight_decay)`` before
  each update, as AdamW does), on weights only, never biases; ``hypergradient`` [False] and
  ``hyper_lr`` (see :data:`DEFAULT_HYPER_LR`).

The ``eps`` and ``initial_accumulator_value`` defaults are Keras's, so one search space means the
same thing in both frameworks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from trainables.errors import HyperparameterError
from trainables.lr_schedules import number_hparam

OPTIMIZERS = ("sgd", "adagrad", "rmsprop", "adam", "adamw")
DEFAULT_OPTIMIZER = "adam"
DEFAULT_LR = 1e-3
DEFAULT_EPS = 1e-7
DEFAULT_RHO = 0.9
DEFAULT_BETA1 = 0.9
DEFAULT_BETA2 = 0.999
DEFAULT_INITIAL_ACCUMULATOR = 0.1
#: Default ``hyper_lr`` per optimiser, from Baydin et al. (2018). The hypergradient
#: ``g . d`` is about ``|g|**2`` for SGD but about ``sum(|g|)`` for the adaptive rules, whose
#: step ``d`` has a magnitude of about 1 per parameter; so their rate needs a much smaller step.
DEFAULT_HYPER_LR = {"sgd": 1e-3, "adagrad": 1e-7, "rmsprop": 1e-7, "adam": 1e-7, "adamw": 1e-7}

#: Hyperparameter keys read by this module.
OPTIMIZER_HPARAMS: frozenset[str] = frozenset(
    {
        "optimizer",
        "lr",
        "momentum",
        "nesterov",
        "rho",
        "eps",
        "initial_accumulator_value",
        "beta1",
        "beta2",
        "weight_decay",
        "hypergradient",
        "hyper_lr",
    }
)


def flag_hparam(hparams: Mapping[str, Any], key: str, default: bool) -> bool:
    """Read a boolean hyperparameter; ``default`` if absent or None.

    Raises:
        HyperparameterError: For anything but a boolean (or 0/1), e.g. the string
            ``"false"``, which ``bool()`` would silently read as True.

    """
    value = hparams.get(key)
    if value is None:
        return default
    if value not in (True, False):
        raise HyperparameterError(
            f"{key} must be true or false, got {value!r}", fix=f"set {key} to a boolean", key=key
        )
    return bool(value)


def _fraction(hparams: Mapping[str, Any], key: str, default: float) -> float:
    return number_hparam(hparams, key, default, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _eps(hparams: Mapping[str, Any]) -> float:
    return number_hparam(hparams, "eps", DEFAULT_EPS, lambda v: v > 0, "a number > 0")


def _sgd_options(hparams: Mapping[str, Any]) -> dict[str, Any]:
    momentum = _fraction(hparams, "momentum", 0.0)
    nesterov = flag_hparam(hparams, "nesterov", False)
    if nesterov and momentum == 0:
        raise HyperparameterError(
            "nesterov needs momentum > 0, got momentum 0",
            fix="set momentum above 0 or nesterov to false",
            key="nesterov",
        )
    return {"momentum": momentum, "nesterov": nesterov}


def _rmsprop_options(hparams: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "rho": _fraction(hparams, "rho", DEFAULT_RHO),
        "momentum": _fraction(hparams, "momentum", 0.0),
        "eps": _eps(hparams),
    }


def _adagrad_options(hparams: Mapping[str, Any]) -> dict[str, Any]:
    initial = number_hparam(
        hparams,
        "initial_accumulator_value",
        DEFAULT_INITIAL_ACCUMULATOR,
        lambda v: v >= 0,
        "a number >= 0",
    )
    return {"eps": _eps(hparams), "initial_accumulator_value": initial}


def _adam_options(hparams: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "beta1": _fraction(hparams, "beta1", DEFAULT_BETA1),
        "beta2": _fraction(hparams, "beta2", DEFAULT_BETA2),
        "eps": _eps(hparams),
    }


_OPTIONS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "sgd": _sgd_options,
    "adagrad": _adagrad_options,
    "rmsprop": _rmsprop_options,
    "adam": _adam_options,
    "adamw": _adam_options,
}


@dataclass(frozen=True)
class OptimizerSettings:
    """The validated optimiser hyperparameters of one trial.

    Attributes:
        name: One of :data:`OPTIMIZERS`.
        lr: Initial learning rate.
        options: The optimiser's own options under the hyperparameter names (``momentum``,
            ``nesterov``, ``rho``, ``eps``, ``initial_accumulator_value``, ``beta1``,
            ``beta2``), only those that apply to ``name``.
        weight_decay: Decoupled weight decay per unit of learning rate.
        hyper_lr: Step size of hypergradient descent on ``lr``; ``None`` when it is off.

    """

    name: str
    lr: float
    options: dict[str, Any]
    weight_decay: float
    hyper_lr: float | None


def optimizer_settings(hparams: Mapping[str, Any]) -> OptimizerSettings:
    """Validate the optimiser hyperparameters; keys of other optimisers are ignored.

    Raises:
        HyperparameterError: Unknown optimiser, out-of-range value, or nesterov without momentum.

    """
    name = hparams.get("optimizer") or DEFAULT_OPTIMIZER
    if name not in _OPTIONS:
        raise HyperparameterError(
            f"unknown optimizer {name!r}",
            fix=f"set optimizer to one of {', '.join(OPTIMIZERS)}",
            key="optimizer",
        )
    hyper_lr = None
    if flag_hparam(hparams, "hypergradient", False):
        hyper_lr = number_hparam(
            hparams, "hyper_lr", DEFAULT_HYPER_LR[name], lambda v: v > 0, "a number > 0"
        )
    return OptimizerSettings(
        name=name,
        # lr 0 is allowed: it freezes the weights, which is useful to measure a model as it is.
        lr=number_hparam(hparams, "lr", DEFAULT_LR, lambda v: v >= 0, "a number >= 0"),
        options=_OPTIONS[name](hparams),
        weight_decay=number_hparam(
            hparams, "weight_decay", 0.0, lambda v: v >= 0, "a number >= 0"
        ),
        hyper_lr=hyper_lr,
    )


def checked_lr(lr: float) -> float:
    """Return ``lr`` as a float for an optimiser's ``set_lr``.

    Raises:
        ValueError: If ``lr`` is negative or not finite.

    """
    lr = float(lr)
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    return lr
