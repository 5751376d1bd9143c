"""Techniques proven end to end in real sweeps: logged learning rates and early stopping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from pipelines import run_sweep
from tests.support.configs import shrunk
from trainables.lr_schedules import lr_formula

pytestmark = pytest.mark.usefixtures("ray_local")
# The TensorFlow runs repeat the torch ones through Keras (about 2 min together on 2 CPUs):
# they run with the slow suite, which CI runs too.
FRAMEWORKS = ["torch", pytest.param("tensorflow", marks=pytest.mark.slow)]

SCHEDULE_PARAMS = {
    "lr_decay": 0.3,
    "lr_step_size": 2,
    "lr_factor": 0.5,
    "lr_warmup_epochs": 1,
    "lr_min": 0.0,
}


def one_digits_trial(tmp_path: Path, framework: str, **params: Any) -> Any:
    """One trial of the digits MLP without dropout, with ``params`` fixed."""
    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n  dropout: {type: constant, value: 0.0}\n")
    return shrunk(
        "digits_mlp_random.yaml",
        **{
            "trainable.framework": framework,
            "trainable.search_space": str(space),
            "search.num_samples": 1,
            **{f"trainable.params.{key}": value for key, value in params.items()},
        },
    )


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_logged_lr_of_each_schedule_matches_its_formula(tmp_path: Path, framework: str) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(
        "parameters:\n  lr_schedule: {type: grid, values: [time, step, exponential, cosine]}\n"
    )
    params = {f"trainable.params.{k}": v for k, v in SCHEDULE_PARAMS.items()}
    config = shrunk(
        "digits_mlp_random.yaml",
        **{
            "trainable.framework": framework,
            "search.method": "grid",
            "search.num_samples": 1,
            "trainable.search_space": str(space),
            "trainable.params.epochs": 4,
            "trainable.params.batch_size": 64,
            "trainable.params.optimizer": "sgd",
            "trainable.params.lr": 0.01,
            **params,
        },
    )
    summary = run_sweep(config, progress=False)

    client = MlflowClient(summary.mlflow_tracking_uri)
    children = client.search_runs(
        [summary.mlflow_experiment_id], filter_string="tags.`tunepipe.kind` = 'trial'"
    )
    assert sorted(c.data.params["lr_schedule"] for c in children) == sorted(
        ["time", "step", "exponential", "cosine"]
    )
    for child in children:
        name = child.data.params["lr_schedule"]
        history = sorted(client.get_metric_history(child.info.run_id, "lr"), key=lambda m: m.step)
        assert [m.step for m in history] == [1, 2, 3, 4]
        expected = [
            lr_formula(name, 0.01, epoch, epochs=4, **SCHEDULE_PARAMS) for epoch in range(4)
        ]
        assert [m.value for m in history] == pytest.approx(expected, rel=1e-6), name


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_early_stopping_ends_the_trial_and_restores_the_best_weights(
    tmp_path: Path, framework: str
) -> None:
    config = one_digits_trial(
        tmp_path,
        framework,
        epochs=10,
        optimizer="adam",
        lr=0.002,
        batch_size=64,
        # val_loss keeps improving, but never by 0.5: the trial must stop after 2 stalls.
        early_stopping_patience=2,
        early_stopping_min_delta=0.5,
        early_stopping_restore_best=True,
    )
    summary = run_sweep(config, progress=False)

    (result,) = list(summary.results)
    frame = result.metrics_dataframe
    assert list(frame["epoch"]) == [1, 2, 3]
    assert frame["val_loss"].iloc[1] < frame["val_loss"].iloc[0]  # improved, by less than 0.5
    # The last report describes the restored epoch-1 model, not the epoch-3 one.
    assert frame["val_loss"].iloc[-1] == pytest.approx(frame["val_loss"].iloc[0], rel=1e-6)
    assert frame["early_stopped"].iloc[-1] == 1

    client = MlflowClient(summary.mlflow_tracking_uri)
    (child,) = client.search_runs(
        [summary.mlflow_experiment_id], filter_string="tags.`tunepipe.kind` = 'trial'"
    )
    assert child.data.tags["tunepipe.end_reason"] == "early_stopped"
    assert "val_loss" in child.data.tags["tunepipe.end_detail"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_hypergradient_inside_a_sweep_raises_a_too_small_learning_rate(
    tmp_path: Path, framework: str
) -> None:
    config = one_digits_trial(
        tmp_path,
        framework,
        epochs=3,
        batch_size=32,
        optimizer="sgd",
        lr=1.0e-4,
        hypergradient=True,
        hyper_lr=1.0e-3,
    )
    summary = run_sweep(config, progress=False)

    (result,) = list(summary.results)
    lrs = list(result.metrics_dataframe["lr"])
    assert lrs[-1] > 10 * 1.0e-4, f"the rate did not adapt upwards: {lrs}"
