"""The user's own models tuned for real (local Ray, MLflow on SQLite, real data): each example
as a sweep, its best model registered and loaded back with ``mlflow.pyfunc``, predicting the
validation rows at the recorded metric; a user's class from Python; a training function
replayed and retrained."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import f1_score

from pipelines import run_retrain, run_sweep
from pipelines.config import DataConfig, load_config
from pipelines.data import prepare_arrays
from pipelines.sweep.replay import replay
from tests.support.user_trainables import EXAMPLES, NearestCentroid

# Several sweeps of a minute or two each: make test-slow runs them (CI runs both suites).
pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow]


def _pyfunc(summary: Any) -> Any:
    mlflow.set_tracking_uri(summary.mlflow_tracking_uri)
    return mlflow.pyfunc.load_model(f"models:/{summary.experiment_name}@challenger")


def _trials(summary: Any) -> list[Any]:
    client = MlflowClient(summary.mlflow_tracking_uri)
    return client.search_runs(
        [summary.mlflow_experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{summary.mlflow_parent_run_id}'",
    )


def test_torch_builder_example_is_tuned_registered_and_served(tmp_path: Path) -> None:
    config = load_config(
        EXAMPLES / "torch_cnn" / "experiment.yaml",
        {"search.num_samples": 2, "trainable.params.epochs": 2, "scheduler.name": "fifo"},
    )
    summary = run_sweep(config, progress=False)

    assert summary.end_reasons["completed"] == 2
    for trial in _trials(summary):  # the builder's own hyperparameters and the library metrics
        assert {"filters", "dropout", "lr"} <= set(trial.data.params)
        assert {"val_f1_macro", "val_balanced_accuracy", "val_accuracy"} <= set(trial.data.metrics)
        assert "model" not in trial.data.params
    split, _ = prepare_arrays(config.data)
    logits = np.asarray(_pyfunc(summary).predict(split.x_val.astype(np.float32)))
    f1 = f1_score(split.y_val, logits.argmax(axis=1), average="macro")
    assert f1 == pytest.approx(summary.best_metric, abs=1e-6)


def test_keras_builder_example_is_tuned_and_registered(tmp_path: Path) -> None:
    config = load_config(
        EXAMPLES / "keras_model" / "experiment.yaml",
        {"search.num_samples": 1, "trainable.params.epochs": 2},
    )
    summary = run_sweep(config, progress=False)

    split, _ = prepare_arrays(config.data)
    logits = np.asarray(_pyfunc(summary).predict(split.x_val.astype(np.float32)))
    accuracy = float((logits.argmax(axis=1) == split.y_val).mean())
    assert accuracy == pytest.approx(summary.best_metric, abs=1e-6)


def test_a_ray_dataset_is_tuned_on_like_a_dataframe() -> None:
    import ray.data
    from sklearn.datasets import load_breast_cancer

    from pipelines.sweep.inputs import sweep_config

    frame = load_breast_cancer(as_frame=True).frame
    raw = {
        "name": "ray_dataset",
        "metric": "val_accuracy",
        "mode": "max",
        "data": {"label_column": "target"},
        "trainable": {"framework": "torch", "model": "mlp", "params": {"epochs": 1}},
    }
    space = {"lr": {"type": "constant", "value": 0.01}}
    config = sweep_config(raw, search_space=space, data=ray.data.from_pandas(frame))
    split, _ = prepare_arrays(config.data)
    assert config.data.dataset == "parquet"
    assert len(split.y_train) + len(split.y_val) == len(frame)


def test_training_function_example_is_registered_replayed_and_retrained(tmp_path: Path) -> None:
    example = EXAMPLES / "sklearn_function" / "experiment.yaml"
    shrink = {"search.num_samples": 2, "trainable.params.epochs": 2, "scheduler.name": "fifo"}
    summary = run_sweep(load_config(example, shrink), progress=False)

    split, _ = prepare_arrays(DataConfig(dataset="diabetes"))
    predictions = np.asarray(_pyfunc(summary).predict(split.x_val))
    rmse = float(np.sqrt(np.mean((predictions - split.y_val) ** 2)) * split.target_std)
    assert rmse == pytest.approx(summary.best_metric, rel=1e-6)
    trials = _trials(summary)
    assert all({"val_rmse", "val_mae", "val_r2"} <= set(t.data.metrics) for t in trials)

    # replay re-trains the recorded trial through the same function, outside Tune
    best = next(t for t in trials if t.data.tags["tunepipe.trial_id"] == summary.best_trial_id)
    replayed = replay(summary.mlflow_tracking_uri, best.info.run_id)
    assert replayed.reproduced, replayed

    # retrain: a warm re-tune whose challenger is judged on the holdout from its predictions
    outcome = run_retrain(load_config(example, shrink), progress=False)
    assert outcome.decision == "promoted" and outcome.challenger_score is not None
    assert np.isfinite(outcome.challenger_score)


def test_notebook_example_tunes_a_dataframe_with_a_builder_and_a_dict_space(
    tmp_path: Path,
) -> None:
    """The script as a user runs it, in its own process (its functions live in __main__)."""
    home = tmp_path / "home"
    env = {**os.environ, "TUNEPIPE_HOME": str(home), "TUNEPIPE_PROGRESS": "0"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "notebook" / "tune_dataframe.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        "best val_roc_auc" in done.stdout
        and "registered: models:/example_notebook/1" in done.stdout
    )
    saved = sorted(p.suffix for p in (home / "inputs").iterdir())
    assert saved == [".parquet", ".yaml"]  # the DataFrame and the search space, as files


def test_a_user_class_from_python_is_registered_behind_a_pyfunc_wrapper(tmp_path: Path) -> None:
    space = {"rate": {"type": "uniform", "low": 0.3, "high": 0.9}}
    config = {
        "name": "user_class",
        "metric": "val_accuracy",
        "mode": "max",
        "data": {"dataset": "digits"},
        "trainable": {"params": {"epochs": 2, "batch_size": 128}},
        "search": {"method": "random", "num_samples": 2},
    }
    summary = run_sweep(config, trainable=NearestCentroid, search_space=space, progress=False)

    split, _ = prepare_arrays(DataConfig(dataset="digits"))
    scores = np.asarray(_pyfunc(summary).predict(split.x_val))
    accuracy = float((scores.argmax(axis=1) == split.y_val).mean())
    assert accuracy == pytest.approx(summary.best_metric)
