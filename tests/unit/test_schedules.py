"""Learning-rate schedules: closed forms against hand-computed values, plateau, validation."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import pytest

from trainables.errors import HyperparameterError
from trainables.lr_schedules import (
    SCHEDULE_HPARAMS,
    SCHEDULES,
    LrSchedule,
    lr_formula,
    schedule_from_hparams,
)

LR0 = 0.1


def _lrs(hparams: dict[str, Any], epochs: int) -> list[float]:
    schedule = schedule_from_hparams({"lr": LR0, **hparams})
    return [schedule.lr_for_epoch(t) for t in range(epochs)]


def test_public_constants() -> None:
    assert SCHEDULES == ("constant", "time", "step", "exponential", "cosine", "plateau")
    assert "lr" not in SCHEDULE_HPARAMS
    assert "epochs" not in SCHEDULE_HPARAMS
    assert {"lr_schedule", "lr_decay", "lr_step_size", "lr_factor"} <= SCHEDULE_HPARAMS
    assert {"lr_warmup_epochs", "lr_min", "lr_patience", "lr_min_delta"} <= SCHEDULE_HPARAMS


def test_constant_is_the_default() -> None:
    schedule = schedule_from_hparams({"lr": LR0})
    assert schedule.name == "constant"
    assert [schedule.lr_for_epoch(t) for t in (0, 5, 100)] == [LR0, LR0, LR0]


def test_time_based() -> None:
    lrs = _lrs({"lr_schedule": "time", "lr_decay": 0.5}, 5)
    assert lrs[0] == pytest.approx(LR0)
    assert lrs[1] == pytest.approx(LR0 / 1.5)
    assert lrs[2] == pytest.approx(LR0 / 2)
    assert lrs[4] == pytest.approx(LR0 / 3)


def test_step_decay() -> None:
    lrs = _lrs({"lr_schedule": "step", "lr_step_size": 5, "lr_factor": 0.5}, 11)
    assert lrs[0] == lrs[4] == pytest.approx(LR0)
    assert lrs[5] == lrs[9] == pytest.approx(LR0 / 2)
    assert lrs[10] == pytest.approx(LR0 / 4)


def test_step_decay_defaults() -> None:
    lrs = _lrs({"lr_schedule": "step"}, 21)
    assert lrs[9] == pytest.approx(LR0)
    assert lrs[10] == pytest.approx(LR0 * 0.5)
    assert lrs[20] == pytest.approx(LR0 * 0.25)


def test_exponential() -> None:
    lrs = _lrs({"lr_schedule": "exponential", "lr_decay": 0.1}, 11)
    assert lrs[0] == pytest.approx(LR0)
    assert lrs[1] == pytest.approx(LR0 * math.exp(-0.1))
    assert lrs[10] == pytest.approx(LR0 / math.e)


def test_zero_decay_is_constant() -> None:
    for name in ("time", "exponential"):
        assert _lrs({"lr_schedule": name}, 4) == pytest.approx([LR0] * 4)


def test_cosine_with_warmup() -> None:
    hp = {"lr_schedule": "cosine", "lr_warmup_epochs": 2, "lr_min": 0.001, "epochs": 10}
    lrs = _lrs(hp, 10)
    assert lrs[0] == pytest.approx(LR0 / 2)
    assert lrs[1] == pytest.approx(LR0)
    assert lrs[2] == pytest.approx(LR0)  # cosine phase starts at its top
    # Half-way through the 8 cosine epochs the rate is the mid-point.
    assert lrs[6] == pytest.approx((LR0 + 0.001) / 2)
    # (1 + cos(7/8 pi)) / 2 ~= 0.038 of the range is left at the last epoch.
    assert lrs[9] == pytest.approx(0.001 + (LR0 - 0.001) * (1 + math.cos(math.pi * 7 / 8)) / 2)
    assert lrs[9] < 0.001 + 0.05 * (LR0 - 0.001)
    after_warmup = lrs[2:]
    assert all(a > b for a, b in itertools.pairwise(after_warmup))
    assert min(lrs) >= 0.001


def test_cosine_without_warmup_and_past_the_end() -> None:
    schedule = schedule_from_hparams({"lr": LR0, "lr_schedule": "cosine", "epochs": 4})
    assert schedule.lr_for_epoch(0) == pytest.approx(LR0)
    assert schedule.lr_for_epoch(2) == pytest.approx(LR0 / 2)
    # Training past `epochs` stays at lr_min instead of climbing back up the cosine.
    assert schedule.lr_for_epoch(4) == pytest.approx(0.0)
    assert schedule.lr_for_epoch(7) == pytest.approx(0.0)


def test_lr_formula_matches_schedule() -> None:
    hp = {"lr_schedule": "cosine", "lr_warmup_epochs": 3, "lr_min": 0.01, "epochs": 12}
    schedule = schedule_from_hparams({"lr": LR0, **hp})
    params = {"lr_warmup_epochs": 3, "lr_min": 0.01, "epochs": 12}
    for t in range(12):
        assert schedule.lr_for_epoch(t) == lr_formula("cosine", LR0, t, **params)


@pytest.mark.parametrize(
    ("name", "params"),
    [("plateau", {}), ("nope", {}), ("cosine", {"lr_warmup_epochs": 1})],
)
def test_lr_formula_rejects_what_has_no_closed_form(name: str, params: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        lr_formula(name, LR0, 0, **params)


def test_accepts_whole_floats_for_integer_knobs() -> None:
    # Quantised samplers give 5.0 for an integer knob.
    schedule = schedule_from_hparams({"lr": LR0, "lr_schedule": "step", "lr_step_size": 5.0})
    assert schedule.lr_for_epoch(5) == pytest.approx(LR0 / 2)


def _plateau(**hp: Any) -> LrSchedule:
    return schedule_from_hparams({"lr": LR0, "lr_schedule": "plateau", "lr_patience": 2, **hp})


def _feed(schedule: LrSchedule, values: list[float]) -> list[float]:
    """Return the lr used for each epoch while observing ``values`` after each one."""
    used = []
    for t, value in enumerate(values):
        used.append(schedule.lr_for_epoch(t))
        schedule.observe(value)
    return used


def test_plateau_cuts_after_patience_flat_epochs() -> None:
    schedule = _plateau()
    # Epoch 0 sets best; epochs 1 and 2 are flat -> cut after epoch 2; 3, 4 flat -> cut again.
    used = _feed(schedule, [1.0, 1.0, 1.0, 1.0, 1.0])
    assert used == pytest.approx([LR0, LR0, LR0, LR0 / 2, LR0 / 2])
    assert schedule.lr_for_epoch(5) == pytest.approx(LR0 / 4)


def test_plateau_improving_sequence_never_cuts() -> None:
    schedule = _plateau()
    used = _feed(schedule, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert used == [LR0] * 7
    assert schedule.lr_for_epoch(7) == LR0


def test_plateau_improvement_resets_wait() -> None:
    schedule = _plateau()
    _feed(schedule, [1.0, 1.0, 0.5, 0.6, 0.5])
    assert schedule.lr_for_epoch(5) == pytest.approx(LR0 / 2)
    assert schedule.state_dict() == {"lr": pytest.approx(LR0 / 2), "wait": 0, "best": 0.5}


def test_plateau_min_delta() -> None:
    schedule = _plateau(lr_min_delta=0.1)
    # Improvements of 0.05 do not beat best - 0.1, so they count as flat.
    _feed(schedule, [1.0, 0.95, 0.9])
    assert schedule.lr_for_epoch(3) == pytest.approx(LR0 / 2)
    # A real improvement of more than min_delta resets the count.
    schedule = _plateau(lr_min_delta=0.1)
    _feed(schedule, [1.0, 0.95, 0.8, 0.75])
    assert schedule.lr_for_epoch(4) == LR0


def test_plateau_nan_is_no_improvement() -> None:
    schedule = _plateau()
    _feed(schedule, [1.0, math.nan, math.nan])
    assert schedule.lr_for_epoch(3) == pytest.approx(LR0 / 2)
    schedule = _plateau()
    _feed(schedule, [math.nan, math.nan])
    assert schedule.lr_for_epoch(2) == pytest.approx(LR0 / 2)
    assert "best" not in schedule.state_dict()


def test_plateau_never_below_lr_min() -> None:
    schedule = _plateau(lr_min=0.03, lr_factor=0.5, lr_patience=1)
    used = _feed(schedule, [1.0] * 8)
    assert used[:4] == pytest.approx([LR0, LR0, LR0 / 2, 0.03])
    assert min(used) == pytest.approx(0.03)
    assert schedule.lr_for_epoch(8) == pytest.approx(0.03)


def test_plateau_state_round_trip_continues_identically() -> None:
    values = [1.0, 0.9, 0.9, 0.95, 0.8, 0.8, 0.85, 0.9, 0.7, 0.7, 0.7, 0.7]
    reference = _plateau()
    expected = _feed(reference, values)

    first = _plateau()
    used = _feed(first, values[:5])
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    resumed = _plateau()
    resumed.load_state_dict(state)
    for t, value in enumerate(values[5:], start=5):
        used.append(resumed.lr_for_epoch(t))
        resumed.observe(value)
    assert used == expected
    assert resumed.state_dict() == reference.state_dict()


def test_stateless_schedules_have_empty_state_and_ignore_observe() -> None:
    schedule = schedule_from_hparams({"lr": LR0, "lr_schedule": "time", "lr_decay": 1.0})
    for _ in range(5):
        schedule.observe(1.0)
    assert schedule.state_dict() == {}
    schedule.load_state_dict({})
    assert schedule.lr_for_epoch(1) == pytest.approx(LR0 / 2)


@pytest.mark.parametrize(
    ("hparams", "key", "echo"),
    [
        ({}, "lr", "None"),
        ({"lr": 0}, "lr", "0"),
        ({"lr": -0.1}, "lr", "-0.1"),
        ({"lr": float("nan")}, "lr", "nan"),
        ({"lr": "fast"}, "lr", "'fast'"),
        ({"lr_schedule": "linear"}, "lr_schedule", "'linear'"),
        ({"lr_decay": -1.0}, "lr_decay", "-1.0"),
        ({"lr_step_size": 0}, "lr_step_size", "0"),
        ({"lr_step_size": 2.5}, "lr_step_size", "2.5"),
        ({"lr_step_size": True}, "lr_step_size", "True"),
        ({"lr_factor": 1.0}, "lr_factor", "1.0"),
        ({"lr_factor": 0}, "lr_factor", "0"),
        ({"lr_warmup_epochs": -1}, "lr_warmup_epochs", "-1"),
        ({"lr_min": -0.5}, "lr_min", "-0.5"),
        ({"lr_patience": 0}, "lr_patience", "0"),
        ({"lr_min_delta": float("inf")}, "lr_min_delta", "inf"),
        ({"lr_schedule": "cosine"}, "epochs", "None"),
        ({"lr_schedule": "cosine", "epochs": 0}, "epochs", "0"),
        ({"lr_schedule": "cosine", "epochs": 5, "lr_warmup_epochs": 5}, "lr_warmup_epochs", "5"),
        ({"lr_schedule": "plateau", "lr_min": 0.5}, "lr_min", "0.5"),
    ],
)
def test_bad_values_raise_hyperparameter_error(
    hparams: dict[str, Any], key: str, echo: str
) -> None:
    with pytest.raises(HyperparameterError) as info:
        schedule_from_hparams({"lr": LR0, **hparams} if key != "lr" else hparams)
    assert info.value.key == key
    message = str(info.value)
    assert key in message
    assert echo in message
    assert "Fix:" in message


def test_unknown_schedule_lists_the_choices() -> None:
    with pytest.raises(HyperparameterError) as info:
        schedule_from_hparams({"lr": LR0, "lr_schedule": "linear"})
    for name in SCHEDULES:
        assert name in str(info.value)
