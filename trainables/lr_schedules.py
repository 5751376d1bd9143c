"""Per-epoch learning-rate schedules shared by every framework's trainable.

The formulas live here once, in plain Python, so the torch and Keras trainables compute the same
rate from the same hyperparameters. A trainable builds a schedule with
:func:`schedule_from_hparams`, uses ``lr_for_epoch(t)`` for epoch ``t`` (0-based), calls
``observe(metric)`` after it and keeps ``state_dict()`` in its checkpoint.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from trainables.errors import HyperparameterError

SCHEDULES: tuple[str, ...] = ("constant", "time", "step", "exponential", "cosine", "plateau")

# key: (default, whole number?, range check, the rule in words). lr_formula takes its defaults
# from here too, so the formulas and the validation can never disagree.
_RULES: dict[str, tuple[float, bool, Callable[[float], bool], str]] = {
    "lr_decay": (0.0, False, lambda v: v >= 0, "a number >= 0"),
    "lr_step_size": (10, True, lambda v: v >= 1, "an integer >= 1"),
    "lr_factor": (0.5, False, lambda v: 0 < v < 1, "a number in (0, 1)"),
    "lr_warmup_epochs": (0, True, lambda v: v >= 0, "an integer >= 0"),
    "lr_min": (0.0, False, lambda v: v >= 0, "a number >= 0"),
    "lr_patience": (2, True, lambda v: v >= 1, "an integer >= 1"),
    "lr_min_delta": (0.0, False, lambda v: v >= 0, "a number >= 0"),
}
SCHEDULE_HPARAMS: frozenset[str] = frozenset({"lr_schedule", *_RULES})


def _bad(key: str, value: Any, expect: str) -> HyperparameterError:
    fix = f"set {key} to {expect} in the trainable params or the search space"
    return HyperparameterError(f"{key} must be {expect}, got {value!r}", fix=fix, key=key)


def number_hparam(
    hparams: Mapping[str, Any],
    key: str,
    default: float | None,
    ok: Callable[[float], bool],
    expect: str,
    *,
    integer: bool = False,
) -> float:
    """Read a finite number from ``hparams``; ``default`` if absent or None (None: required).

    With ``integer``, whole floats such as ``5.0`` pass, as quantised samplers produce them.

    Raises:
        HyperparameterError: Missing and required, not a finite (whole) number, or ``ok`` fails.

    """
    value = hparams.get(key)
    if value is None and default is not None:
        return default
    # bool is an int subclass, but `True` as a step size is a mistake, not the number 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _bad(key, value, expect)
    number = float(value)
    if not math.isfinite(number) or not ok(number) or (integer and not number.is_integer()):
        raise _bad(key, value, expect)
    return int(number) if integer else number


def lr_formula(name: str, lr0: float, t: int, **params: float) -> float:
    """Return the closed-form rate of schedule ``name`` (any but plateau) at epoch ``t``.

    Args:
        name: Schedule name; ``"plateau"`` has no closed form, it depends on the metric.
        lr0: Base learning rate.
        t: Epoch index, starting at 0.
        **params: Knobs under their hyperparameter names (``lr_decay``, ...), defaults for the
            missing ones; ``epochs`` is required by ``"cosine"``.

    Raises:
        ValueError: Unknown name, plateau, negative ``t`` or cosine without ``epochs``.

    """
    if name not in SCHEDULES or name == "plateau" or t < 0:
        raise ValueError(f"no closed-form rate for schedule {name!r} at epoch {t}")
    p = {key: rule[0] for key, rule in _RULES.items()} | params
    if name == "time":
        return lr0 / (1 + p["lr_decay"] * t)
    if name == "step":
        return lr0 * p["lr_factor"] ** (t // int(p["lr_step_size"]))
    if name == "exponential":
        return lr0 * math.exp(-p["lr_decay"] * t)
    if name == "cosine":
        if "epochs" not in p:
            raise ValueError("the cosine schedule needs epochs")
        warmup, lr_min = int(p["lr_warmup_epochs"]), p["lr_min"]
        if t < warmup:
            return lr0 * (t + 1) / warmup
        # Clamped so a run past `epochs` (resumed with more) stays at lr_min, not climbing back.
        progress = min(1.0, (t - warmup) / max(1, int(p["epochs"]) - warmup))
        return lr_min + (lr0 - lr_min) * (1 + math.cos(math.pi * progress)) / 2
    return lr0


class LrSchedule:
    """A validated schedule (see :func:`schedule_from_hparams`); ``params`` by hparam name."""

    def __init__(self, name: str, lr0: float, params: Mapping[str, float]) -> None:
        self.name, self.lr0, self.params = name, lr0, dict(params)
        # Plateau state: the rate cut so far, the best metric, epochs since it was beaten.
        self._lr, self._best, self._wait = lr0, math.inf, 0

    def __repr__(self) -> str:
        return f"LrSchedule({self.name!r}, lr0={self.lr0!r}, params={self.params!r})"

    def lr_for_epoch(self, t: int) -> float:
        """Return the learning rate to use for epoch ``t`` (0-based)."""
        if self.name == "plateau":
            return self._lr
        return lr_formula(self.name, self.lr0, t, **self.params)

    def observe(self, value: float) -> None:
        """Feed the epoch's monitored metric (lower is better); only plateau uses it."""
        if self.name != "plateau":
            return
        value = float(value)
        # Spelled out so a diverged (NaN) epoch is plainly "no improvement".
        if not math.isnan(value) and value < self._best - self.params["lr_min_delta"]:
            self._best, self._wait = value, 0
            return
        self._wait += 1
        if self._wait >= self.params["lr_patience"]:
            self._lr = max(self.params["lr_min"], self._lr * self.params["lr_factor"])
            self._wait = 0

    def state_dict(self) -> dict[str, float | int]:
        """Return plateau's lr, wait and best (empty for the others), JSON-serialisable."""
        if self.name != "plateau":
            return {}
        state: dict[str, float | int] = {"lr": self._lr, "wait": self._wait}
        if math.isfinite(self._best):  # inf is not valid JSON; absent means "nothing seen yet"
            state["best"] = self._best
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; stateless schedules ignore it."""
        if self.name == "plateau":
            self._lr, self._wait = float(state["lr"]), int(state["wait"])
            self._best = float(state.get("best", math.inf))


def schedule_from_hparams(hparams: Mapping[str, Any]) -> LrSchedule:
    """Validate the schedule hyperparameters and build the schedule.

    Every present knob is checked even if the schedule ignores it: a bad value in a search space
    is a mistake whichever schedule a trial draws.

    Raises:
        HyperparameterError: Unknown ``lr_schedule``, missing or out-of-range value; the
            message names the key and echoes the value.

    """
    name = hparams.get("lr_schedule") or "constant"
    if name not in SCHEDULES:
        raise _bad("lr_schedule", name, f"one of {', '.join(SCHEDULES)}")
    lr0 = number_hparam(hparams, "lr", None, lambda v: v > 0, "a number > 0")
    params = {
        key: number_hparam(hparams, key, default, ok, expect, integer=integer)
        for key, (default, integer, ok, expect) in _RULES.items()
    }
    if name in ("cosine", "plateau") and params["lr_min"] > lr0:
        raise _bad("lr_min", params["lr_min"], f"at most lr ({lr0:g})")
    if name == "cosine":
        expect = "an integer >= 1 (the cosine schedule needs it)"
        params["epochs"] = number_hparam(
            hparams, "epochs", None, lambda v: v >= 1, expect, integer=True
        )
        # A warm-up filling the whole run would never reach the cosine phase.
        if params["lr_warmup_epochs"] >= params["epochs"]:
            expect = f"less than epochs ({params['epochs']:g})"
            raise _bad("lr_warmup_epochs", params["lr_warmup_epochs"], expect)
    return LrSchedule(name, lr0, params)
