"""Other tasks and frameworks end to end: scikit-learn ensembles under ASHA, regression."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import run_sweep
from pipelines.data import load_raw, prepare_arrays
from pipelines.tracking.models import load_registered_model
from tests.support.configs import shrunk

pytestmark = pytest.mark.usefixtures("ray_local")


def test_random_forest_grows_per_epoch_and_registers_a_scoring_model() -> None:
    config = shrunk("digits_random_forest.yaml", **{"search.num_samples": 4})
    summary = run_sweep(config, progress=False)

    for result in summary.results:
        frame = result.metrics_dataframe
        n = result.config["n_estimators"]
        expected = [min(n, max(1, round(n * k / 4))) for k in range(1, len(frame) + 1)]
        assert list(frame["n_trees"]) == expected  # each epoch adds trees (warm start)
    assert summary.best_metric > 0.85

    model = load_registered_model(summary.mlflow_tracking_uri, "digits_random_forest")
    split, _ = prepare_arrays(config.data)
    accuracy = float(
        (model.predict(split.x_val.reshape(len(split.x_val), -1)) == split.y_val).mean()
    )
    assert accuracy == pytest.approx(summary.best_metric, abs=1e-9)


def test_regression_reports_rmse_in_the_target_units() -> None:
    config = shrunk(
        "diabetes_mlp_regression.yaml",
        **{"search.num_samples": 2, "trainable.params.epochs": 6, "scheduler": {"name": "fifo"}},
    )
    summary = run_sweep(config, progress=False)

    target_std = float(np.std(load_raw(config.data).y))  # ~77 for diabetes progression
    assert summary.metric == "val_rmse"
    # Finite, in the target's units (not standardised), and better than predicting the mean.
    assert 0.5 * target_std < summary.best_metric < target_std
    for result in summary.results:
        frame = result.metrics_dataframe
        assert frame["val_mae"].iloc[-1] <= frame["val_rmse"].iloc[-1]
