"""The retrain's rules without Ray: promotion decisions, the stable holdout, warm-start points."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from pipelines.config import DataConfig
from pipelines.data import prepare_arrays
from pipelines.data.preprocess import holdout_rows
from pipelines.retrain.compat import ModelInputs, incompatibility
from pipelines.retrain.lock import RetrainBusy, experiment_lock
from pipelines.retrain.rules import decide, retrain_config
from pipelines.sweep.warm_start import EarlierTrial, WarmStart, typed_params
from search_spaces import load_search_space
from tests.support.configs import REPO, shrunk

MLP_SPACE = REPO / "search_spaces" / "library" / "mlp.yaml"


@pytest.mark.parametrize(
    ("challenger", "champion", "mode", "margin", "decision"),
    [
        (0.90, None, "max", 0.01, "promoted"),  # no champion yet
        (0.95, 0.93, "max", 0.01, "promoted"),  # gains 0.02 > 0.01
        (0.935, 0.93, "max", 0.01, "kept"),  # gains 0.005, not above the margin
        (0.93, 0.93, "max", 0.0, "kept"),  # a tie is no improvement
        (0.20, 0.30, "min", 0.05, "promoted"),  # lower loss by 0.1
        (0.29, 0.30, "min", 0.05, "kept"),
        (math.nan, None, "max", 0.0, "kept"),  # never promote a model that scored NaN
    ],
)
def test_promotion_needs_a_gain_above_the_margin(
    challenger: float, champion: float | None, mode: str, margin: float, decision: str
) -> None:
    got, reason = decide(challenger, champion, mode, margin)
    assert got == decision
    assert reason


def test_an_incompatible_champion_is_replaced_and_the_reason_says_which_input_changed() -> None:
    # Only an incompatibility reaches decide() as a problem: a champion that could not be
    # scored for another reason fails the retrain first (tests/unit/test_retrain_champion.py).
    problem = "the champion (v1) cannot score today's data: it predicts 10 classes, today's has 3"
    assert decide(0.5, None, "max", 0.1, problem) == ("promoted", problem)
    assert decide(math.nan, None, "max", 0.1, problem)[0] == "kept"  # nor a NaN challenger


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("Connection refused"),
        TimeoutError("read timed out"),
        OSError(5, "Input/output error"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"),
        RuntimeError("something nobody has seen before"),
        ValueError("could not convert string to float: 'n/a'"),
    ],
)
def test_an_error_not_known_to_repeat_is_no_incompatibility(error: Exception) -> None:
    today = ModelInputs("torch", "classification", (64,), 10)
    assert incompatibility(error, today, today) is None
    assert incompatibility(error, None, today) is None


def test_a_local_error_with_recorded_inputs_that_changed_names_each_change() -> None:
    recorded = ModelInputs("torch", "classification", (64,), 10, ("a", "b"))
    today = ModelInputs("torch", "classification", (32,), 10, ("a", "c"))
    found = incompatibility(ValueError("boom"), recorded, today)
    assert found is not None and found.what == "input_shape,feature_columns"
    assert "today's data has (32,)" in str(found) and "['a', 'c']" in str(found)
    assert ModelInputs.from_json(recorded.to_json()) == recorded
    assert ModelInputs.from_json("{not json") is None and ModelInputs.from_json(None) is None
    missing = incompatibility(ModuleNotFoundError("no", name="xgboost"), None, today)
    assert missing is not None and missing.what == "not_installed"


def test_a_row_keeps_its_side_of_the_holdout_however_the_dataset_grows() -> None:
    x = load_digits().data.astype(np.float32)
    small, full = holdout_rows(x[:500], 0.2), holdout_rows(x, 0.2)
    assert np.array_equal(small, full[:500])  # the first 500 rows did not move
    assert 0.15 < full.mean() < 0.25
    assert not holdout_rows(x, 0.0).any()
    texts = ["free prize now", "see you at 5", "free prize now"]
    assert holdout_rows(texts, 0.5)[0] == holdout_rows(texts, 0.5)[2]  # duplicates together


def test_holdout_rows_are_in_no_training_or_validation_split() -> None:
    prepared, _ = prepare_arrays(DataConfig(dataset="digits", holdout_fraction=0.2))
    assert prepared.x_holdout is not None and prepared.y_holdout is not None
    total = len(prepared.y_train) + len(prepared.y_val) + len(prepared.y_holdout)
    assert total == 1797
    seen = {row.tobytes() for row in np.concatenate([prepared.x_train, prepared.x_val])}
    assert not any(row.tobytes() in seen for row in prepared.x_holdout)
    without, _ = prepare_arrays(DataConfig(dataset="digits"))
    assert without.x_holdout is None and prepared.fingerprint() != without.fingerprint()


def test_recorded_params_become_typed_points_of_the_current_space() -> None:
    space = load_search_space(MLP_SPACE)
    recorded = {
        "lr": "0.01",
        "optimizer": "adam",
        "batch_size": "64",
        "hidden_units": "96",
        "hidden_layers": "2",
        "dropout": "0.1",
        "weight_decay": "1e-05",
        "epochs": "6",
    }
    point = typed_params(space, recorded)
    assert point is not None
    assert point["lr"] == 0.01 and point["optimizer"] == "adam"
    assert point["batch_size"] == 64 and isinstance(point["batch_size"], int)
    assert point["hidden_units"] == 96 and isinstance(point["hidden_units"], int)
    assert "epochs" not in point  # not searched
    assert typed_params(space, {**recorded, "lr": "0.5"}) is None  # out of today's bounds
    assert typed_params(space, {**recorded, "optimizer": "rmsprop"}) is None


def test_warm_start_evaluates_distinct_top_k_first_and_moves_the_seed_on() -> None:
    trials = (
        EarlierTrial({"lr": 0.1}, 0.9, "a"),
        EarlierTrial({"lr": 0.1}, 0.88, "b"),  # the same configuration again
        EarlierTrial({"lr": 0.2}, 0.8, "c"),
        EarlierTrial({"lr": 0.3}, 0.7, "d"),
    )
    warm = WarmStart(trials, top_k=2, mode="max")
    assert warm.points() == [{"lr": 0.1}, {"lr": 0.2}]
    assert warm.seed(3) == 7 and warm.seed(None) is None
    assert WarmStart(trials, top_k=0, mode="max").points() == []


def test_a_retrain_tunes_fewer_trials_and_always_sets_a_holdout_aside() -> None:
    config = shrunk("digits_mlp_random.yaml")
    assert config.data.holdout_fraction == 0
    retrain = retrain_config(config)
    assert retrain.data.holdout_fraction == config.retrain.holdout_fraction > 0
    assert retrain.search.num_samples == config.retrain.num_samples
    assert retrain.tracking.register_model


def test_the_experiment_lock_admits_one_retrain_at_a_time(isolated_home: Path) -> None:
    with (
        experiment_lock("digits"),
        pytest.raises(RetrainBusy, match="another retrain"),
        experiment_lock("digits"),
    ):
        pass
    with experiment_lock("digits"), experiment_lock("other"):  # released; and per experiment
        pass
