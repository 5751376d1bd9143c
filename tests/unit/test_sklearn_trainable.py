"""Unit tests for the scikit-learn trainable, on real (small) scikit-learn datasets."""

from __future__ import annotations

import json
import math
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import (
    GradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)

from tests.support.trainables import Split, batches, diabetes_split, digits_split, fit, make
from trainables.errors import HyperparameterError
from trainables.protocol import DataSpec, TrialTrainable
from trainables.sklearn_trainable import (
    MODEL_FILE,
    STATE_FILE,
    SklearnTrainable,
    UntrustedCheckpointError,
    trees_after_epoch,
)


@pytest.fixture(scope="module")
def digits() -> Split:
    return digits_split(shape=(8, 8))  # 2-D examples without a channel: rows get flattened


@pytest.fixture(scope="module")
def diabetes() -> Split:
    return diabetes_split()  # standardised targets, errors reported in target units


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # set_cpu_threads writes a class attribute: keep every test starting from the default.
    monkeypatch.setattr(SklearnTrainable, "cpu_threads", 1)


def ensemble(hparams: dict[str, Any], data: Split) -> SklearnTrainable:
    """A scikit-learn trainable (the model is in ``hparams``) set up for ``data``."""
    trainable: SklearnTrainable = make("sklearn", hparams, data)
    return trainable


class Payload:
    """A custom class: a checkpoint holding one must be refused before it is rebuilt."""

    rebuilt = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        Payload.rebuilt = True
        self.__dict__.update(state)


def test_satisfies_protocol() -> None:
    assert isinstance(SklearnTrainable(), TrialTrainable)


def test_more_trees_do_not_score_worse(digits: Split) -> None:
    def accuracy(n_estimators: int) -> float:
        hparams = {"model": "random_forest", "n_estimators": n_estimators, "epochs": 1}
        return fit(ensemble({**hparams, "seed": 3}, digits), digits, epochs=1)[0]["val_accuracy"]

    few, many = accuracy(5), accuracy(60)
    assert few > 0.8
    assert many > 0.8
    assert many >= few


@pytest.mark.parametrize("model", ["random_forest", "gradient_boosting"])
def test_each_epoch_grows_the_ensemble(digits: Split, model: str) -> None:
    hparams = {"model": model, "n_estimators": 10, "epochs": 4, "max_depth": 3}
    trainable = ensemble(hparams, digits)
    history = fit(trainable, digits, epochs=4)
    # 2.5 rounds to 2 and 7.5 to 8 (ties to even), as Python's round does.
    assert [m["n_trees"] for m in history] == [2, 5, 8, 10]
    assert [trees_after_epoch(10, k, 4) for k in range(1, 5)] == [2, 5, 8, 10]
    for metrics in history:
        assert set(metrics) == {"train_loss", "n_trees", "val_loss", "val_accuracy"}
        assert all(math.isfinite(value) for value in metrics.values())
    assert trainable.estimator is not None
    assert trainable.estimator.n_estimators == 10


def test_warm_start_keeps_earlier_trees(digits: Split) -> None:
    trainable = ensemble({"model": "random_forest", "n_estimators": 6, "epochs": 2}, digits)
    fit(trainable, digits, epochs=1)
    assert trainable.estimator is not None
    first = list(trainable.estimator.estimators_)
    fit(trainable, digits, epochs=1)
    assert trainable.estimator.estimators_[:3] == first
    assert len(trainable.estimator.estimators_) == 6


def test_tree_counts_at_least_one_and_capped(digits: Split) -> None:
    trainable = ensemble({"model": "random_forest", "n_estimators": 2, "epochs": 5}, digits)
    counts = [m["n_trees"] for m in fit(trainable, digits, epochs=5)]
    assert counts == [1, 1, 1, 2, 2]
    # An extra epoch (past ``epochs``) never grows beyond n_estimators.
    assert fit(trainable, digits, epochs=1)[0]["n_trees"] == 2


def test_gradient_boosting_regression_improves_every_epoch(diabetes: Split) -> None:
    hparams = {"model": "gradient_boosting", "n_estimators": 60, "epochs": 4}
    trainable = ensemble({**hparams, "max_depth": 2, "lr": 0.05}, diabetes)
    history = fit(trainable, diabetes, epochs=4)
    losses = [m["val_loss"] for m in history]
    assert all(later < earlier for earlier, later in pairwise(losses))
    assert [m["n_trees"] for m in history] == [15, 30, 45, 60]
    last = history[-1]
    assert set(last) == {"train_loss", "n_trees", "val_loss", "val_rmse", "val_mae"}
    assert last["train_loss"] < history[0]["train_loss"]
    # Targets are standardised, so predicting the mean scores a val_loss of about 1.0.
    assert last["val_loss"] < 0.7
    std = diabetes.spec.target_std
    assert last["val_rmse"] == pytest.approx(math.sqrt(last["val_loss"]) * std)
    predictions = trainable.predict(diabetes.x_val)
    assert predictions.dtype == np.float32
    assert predictions.shape == (len(diabetes.x_val),)
    mae = float(np.mean(np.abs(predictions - diabetes.y_val))) * std
    assert mae == pytest.approx(last["val_mae"], rel=1e-5)


def test_classification_metrics_match_predict(digits: Split) -> None:
    trainable = ensemble({"model": "random_forest", "n_estimators": 20, "epochs": 1}, digits)
    metrics = fit(trainable, digits, epochs=1)[0]
    predictions = trainable.predict(digits.x_val)
    assert predictions.dtype == np.int64
    assert np.mean(predictions == digits.y_val) == pytest.approx(metrics["val_accuracy"])
    # Flattened rows (tabular storage) give the same predictions as shaped examples.
    flat = digits.x_val.reshape(len(digits.x_val), -1)
    np.testing.assert_array_equal(trainable.predict(flat), predictions)
    assert trainable.predict(digits.x_val[:0]).shape == (0,)


def test_class_missing_from_training_still_scores(digits: Split) -> None:
    trainable = ensemble({"model": "random_forest", "n_estimators": 5, "epochs": 1}, digits)
    seen = digits.y_train != 0  # Class 0 missing: every other column shifts if mis-mapped.
    trainable.train_epoch(batches(digits.x_train[seen], digits.y_train[seen]))
    metrics = trainable.evaluate(digits.val())
    # Log loss over all ten labels: large on the unseen class, but finite.
    assert math.isfinite(metrics["val_loss"])
    assert 0.7 < metrics["val_accuracy"] < 1.0


@pytest.mark.parametrize(
    ("model", "fixture", "hparams"),
    [
        ("random_forest", "digits", {"max_depth": 6}),
        ("gradient_boosting", "diabetes", {"max_depth": 2, "lr": 0.1}),
    ],
)
def test_checkpoint_round_trip_continues_training(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    model: str,
    fixture: str,
    hparams: dict[str, Any],
) -> None:
    data: Split = request.getfixturevalue(fixture)
    directory = tmp_path / "checkpoint"
    hparams = {"model": model, "n_estimators": 8, "epochs": 4, "seed": 5, **hparams}
    original = ensemble(hparams, data)
    fit(original, data, epochs=2)
    original.save(directory)
    assert {p.name for p in directory.iterdir()} == {MODEL_FILE, STATE_FILE}

    restored = ensemble(hparams, data)
    restored.load(directory)
    np.testing.assert_array_equal(restored.predict(data.x_val), original.predict(data.x_val))
    val = data.val()
    assert restored.evaluate(val) == original.evaluate(val)

    # The third epoch adds trees to the loaded ensemble (6 of 8), exactly as without the stop.
    next_epoch = data.train(99)
    assert restored.train_epoch(next_epoch) == original.train_epoch(next_epoch)
    assert restored.train_epoch(next_epoch)["n_trees"] == 8
    assert restored.estimator is not None
    assert original.estimator is not None
    loaded_first = np.ravel(restored.estimator.estimators_)[0].tree_
    original_first = np.ravel(original.estimator.estimators_)[0].tree_
    np.testing.assert_array_equal(loaded_first.threshold, original_first.threshold)


def test_load_refuses_untrusted_types(digits: Split, tmp_path: Path) -> None:
    trainable = ensemble({"model": "random_forest", "n_estimators": 2, "epochs": 1}, digits)
    fit(trainable, digits, epochs=1)
    trainable.save(tmp_path)
    sio.dump({"model": Payload()}, tmp_path / MODEL_FILE)
    assert any("Payload" in name for name in sio.get_untrusted_types(file=tmp_path / MODEL_FILE))
    Payload.rebuilt = False
    with pytest.raises(UntrustedCheckpointError, match="Payload"):
        trainable.load(tmp_path)
    assert Payload.rebuilt is False


def test_load_refuses_another_estimator(digits: Split, tmp_path: Path) -> None:
    forest = ensemble({"model": "random_forest", "n_estimators": 2, "epochs": 1}, digits)
    fit(forest, digits, epochs=1)
    forest.save(tmp_path)
    boosting = ensemble({"model": "gradient_boosting", "n_estimators": 2, "epochs": 1}, digits)
    with pytest.raises(UntrustedCheckpointError, match="GradientBoostingClassifier"):
        boosting.load(tmp_path)
    # Default-trusted but foreign to this trial: also refused.
    sio.dump(GradientBoostingClassifier(), tmp_path / MODEL_FILE)
    with pytest.raises(UntrustedCheckpointError, match="RandomForestClassifier"):
        forest.load(tmp_path)


def test_load_refuses_malformed_tree(diabetes: Split, tmp_path: Path) -> None:
    trainable = ensemble({"model": "random_forest", "n_estimators": 2, "epochs": 1}, diabetes)
    fit(trainable, diabetes, epochs=1)
    assert isinstance(trainable.estimator, RandomForestRegressor)
    tree = trainable.estimator.estimators_[0].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    nodes["left_child"][0] = 10**6  # Points far outside the node array.
    tree.__setstate__({**state, "nodes": nodes})
    sio.dump(trainable.estimator, tmp_path / MODEL_FILE)
    (tmp_path / STATE_FILE).write_text(json.dumps({"epoch": 1}))
    fresh = ensemble({"model": "random_forest", "n_estimators": 2, "epochs": 1}, diabetes)
    with pytest.raises(UntrustedCheckpointError, match="malformed tree"):
        fresh.load(tmp_path)


def test_hparams_reach_the_estimator(digits: Split) -> None:
    SklearnTrainable.set_cpu_threads(3)
    extras = {"batch_size": 32, "aug_hflip": True, "optimizer": "adam"}  # Ignored.
    hparams = {"n_estimators": 40.0, "max_depth": 4, "min_samples_leaf": 2, "seed": 9}
    forest = ensemble(
        {"model": "random_forest", "epochs": 2, "lr": 0.5, **hparams, **extras}, digits
    )
    assert type(forest.estimator) is RandomForestClassifier
    params = forest.estimator.get_params()
    assert params["n_jobs"] == 3
    assert (params["max_depth"], params["min_samples_leaf"]) == (4, 2)
    assert (params["random_state"], params["warm_start"]) == (9, True)

    boosting = ensemble({"model": "gradient_boosting", "epochs": 1, "lr": 0.3}, digits)
    assert type(boosting.estimator) is GradientBoostingClassifier
    params = boosting.estimator.get_params()
    assert params["learning_rate"] == 0.3
    assert (params["max_depth"], params["min_samples_leaf"], params["random_state"]) == (
        None,
        1,
        0,
    )
    SklearnTrainable.set_cpu_threads(0)
    assert SklearnTrainable.cpu_threads == 1


def test_unknown_model_names_valid_ones(digits: Split) -> None:
    with pytest.raises(HyperparameterError, match="xgboost") as info:
        ensemble({"model": "xgboost", "epochs": 1}, digits)
    assert "random_forest" in str(info.value) and "gradient_boosting" in str(info.value)
    with pytest.raises(HyperparameterError, match="random_forest, gradient_boosting"):
        ensemble({"epochs": 1}, digits)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"n_estimators": 0}, "n_estimators must be >= 1"),
        ({"n_estimators": 2.5}, "n_estimators must be an integer"),
        ({"n_estimators": True}, "n_estimators must be an integer"),
        ({"max_depth": 0}, "max_depth must be >= 1"),
        ({"min_samples_leaf": 0}, "min_samples_leaf must be >= 1"),
        ({"lr": 0.0}, "lr must be a number > 0"),
        ({"epochs": None}, "epochs must be an integer"),
    ],
)
def test_invalid_hparams_rejected(digits: Split, override: dict[str, Any], message: str) -> None:
    with pytest.raises(HyperparameterError, match=message):
        ensemble({"model": "random_forest", "epochs": 2, **override}, digits)


def test_epochs_required(digits: Split) -> None:
    with pytest.raises(HyperparameterError, match="'epochs' is required"):
        ensemble({"model": "random_forest"}, digits)


def test_unknown_task_rejected() -> None:
    spec = DataSpec((4,), 0, "ranking", 1, 1)
    with pytest.raises(ValueError, match="classification, regression"):
        SklearnTrainable().setup({"model": "random_forest", "epochs": 1}, spec, "cpu")


def test_empty_epoch_rejected(digits: Split) -> None:
    trainable = ensemble({"model": "random_forest", "epochs": 1}, digits)
    with pytest.raises(ValueError, match="no rows"):
        trainable.train_epoch([])
    with pytest.raises(ValueError, match="no rows"):
        trainable.evaluate([])
