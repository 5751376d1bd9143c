"""Early stopping: modes, patience, min_delta, NaN, reason text, resume, hparam validation."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from trainables.early_stopping import (
    EARLY_STOPPING_HPARAMS,
    EarlyStopping,
    early_stopping_from_hparams,
)
from trainables.errors import HyperparameterError


def _feed(stopper: EarlyStopping, values: list[float], start: int = 0) -> list[bool]:
    return [stopper.update(value, epoch) for epoch, value in enumerate(values, start=start)]


def test_min_mode_tracks_best_and_stops_after_patience() -> None:
    stopper = EarlyStopping(patience=3, mode="min")
    assert _feed(stopper, [1.0, 0.8, 0.9, 0.85]) == [True, True, False, False]
    assert (stopper.best, stopper.best_epoch, stopper.wait) == (0.8, 1, 2)
    assert not stopper.should_stop
    assert stopper.update(0.8, 4) is False  # equal is not better
    assert stopper.should_stop


def test_max_mode() -> None:
    stopper = EarlyStopping(patience=2, mode="max")
    assert _feed(stopper, [0.5, 0.7, 0.6, 0.7]) == [True, True, False, False]
    assert (stopper.best, stopper.best_epoch) == (0.7, 1)
    assert stopper.should_stop


def test_improvement_resets_wait() -> None:
    stopper = EarlyStopping(patience=2, mode="min")
    _feed(stopper, [1.0, 1.1, 0.5, 0.6])
    assert (stopper.best_epoch, stopper.wait, stopper.should_stop) == (2, 1, False)


def test_min_delta_must_be_exceeded() -> None:
    stopper = EarlyStopping(patience=5, mode="min", min_delta=0.1)
    assert _feed(stopper, [1.0, 0.95, 0.9, 0.89]) == [True, False, False, True]
    assert (stopper.best, stopper.best_epoch) == (0.89, 3)
    stopper = EarlyStopping(patience=5, mode="max", min_delta=0.1)
    assert _feed(stopper, [0.5, 0.6, 0.61]) == [True, False, True]


def test_nan_never_improves() -> None:
    stopper = EarlyStopping(patience=2, mode="min")
    assert _feed(stopper, [math.nan]) == [False]
    assert stopper.best is None
    assert _feed(stopper, [1.0, math.nan, math.nan], start=1) == [True, False, False]
    assert (stopper.best, stopper.best_epoch) == (1.0, 1)
    assert stopper.should_stop
    # A later finite value can still beat the best set before the NaNs.
    assert stopper.update(0.5, 4) is True


def test_nan_only_stops_and_reason_says_so() -> None:
    stopper = EarlyStopping(patience=2, mode="max")
    _feed(stopper, [math.nan, math.nan])
    assert stopper.should_stop
    assert (
        stopper.reason("val_acc") == "no improvement of val_acc for 2 epochs (no valid value yet)"
    )


def test_reason_text() -> None:
    stopper = EarlyStopping(patience=3, mode="min", min_delta=0.001)
    _feed(stopper, [0.5, 0.3, 0.2, 0.15, 0.1234, 0.124, 0.13, 0.1234])
    assert stopper.should_stop
    assert stopper.reason("val_loss") == (
        "no improvement of val_loss by more than 0.001 for 3 epochs (best 0.1234 at epoch 4)"
    )
    stopper = EarlyStopping(patience=1, mode="max")
    _feed(stopper, [0.9, 0.8])
    assert stopper.reason("acc") == "no improvement of acc for 1 epoch (best 0.9 at epoch 0)"


def test_state_round_trip_continues_identically() -> None:
    values = [1.0, 0.8, 0.85, 0.7, 0.75, 0.74, 0.72, 0.71, 0.9]
    reference = EarlyStopping(patience=3, mode="min", min_delta=0.02)
    expected = _feed(reference, values)

    first = EarlyStopping(patience=3, mode="min", min_delta=0.02)
    got = _feed(first, values[:4])
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    resumed = EarlyStopping(patience=3, mode="min", min_delta=0.02)
    resumed.load_state_dict(state)
    got += _feed(resumed, values[4:], start=4)
    assert got == expected
    assert resumed == reference
    assert resumed.should_stop


def test_fresh_state_is_json_serialisable() -> None:
    stopper = EarlyStopping(patience=1, mode="min")
    state = json.loads(json.dumps(stopper.state_dict(), allow_nan=False))
    other = EarlyStopping(patience=1, mode="min", best=3.0, wait=1)
    other.load_state_dict(state)
    assert (other.best, other.best_epoch, other.wait) == (None, 0, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"patience": 0, "mode": "min"},
        {"patience": 1, "mode": "up"},
        {"patience": 1, "mode": "min", "min_delta": -1.0},
    ],
)
def test_direct_construction_validates(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        EarlyStopping(**kwargs)


def test_from_hparams_off_when_absent_or_zero() -> None:
    assert early_stopping_from_hparams({"lr": 0.1}, "min") is None
    assert early_stopping_from_hparams({"early_stopping_patience": 0}, "min") is None
    assert early_stopping_from_hparams({"early_stopping_patience": None}, "max") is None


def test_from_hparams_builds() -> None:
    hp = {
        "early_stopping_patience": 4,
        "early_stopping_min_delta": 0.01,
        "early_stopping_restore_best": True,
    }
    assert set(hp) == EARLY_STOPPING_HPARAMS
    stopper = early_stopping_from_hparams(hp, "max")
    assert stopper == EarlyStopping(patience=4, mode="max", min_delta=0.01, restore_best=True)
    stopper = early_stopping_from_hparams({"early_stopping_patience": 2.0}, "min")
    assert stopper == EarlyStopping(patience=2, mode="min")


@pytest.mark.parametrize(
    ("hparams", "key", "echo"),
    [
        ({"early_stopping_patience": -1}, "early_stopping_patience", "-1"),
        ({"early_stopping_patience": 1.5}, "early_stopping_patience", "1.5"),
        ({"early_stopping_patience": "3"}, "early_stopping_patience", "'3'"),
        (
            {"early_stopping_patience": 3, "early_stopping_min_delta": -0.1},
            "early_stopping_min_delta",
            "-0.1",
        ),
        (
            {"early_stopping_patience": 3, "early_stopping_restore_best": "yes"},
            "early_stopping_restore_best",
            "'yes'",
        ),
        # Validated even while early stopping is off, so the mistake is not hidden.
        ({"early_stopping_min_delta": float("nan")}, "early_stopping_min_delta", "nan"),
    ],
)
def test_from_hparams_bad_values(hparams: dict[str, Any], key: str, echo: str) -> None:
    with pytest.raises(HyperparameterError) as info:
        early_stopping_from_hparams(hparams, "min")
    assert info.value.key == key
    assert key in str(info.value)
    assert echo in str(info.value)


def test_from_hparams_bad_mode() -> None:
    with pytest.raises(ValueError):
        early_stopping_from_hparams({"early_stopping_patience": 2}, "minimum")
