"""What people see of a finished sweep: plots on the parent run, ``report``, the trial record
and ``replay`` (real sweep, local Ray with 2 CPUs, MLflow on SQLite in tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from pipelines import run_sweep
from pipelines.cli import app
from pipelines.tracking.history import load_sweep_history
from pipelines.tracking.schema import TRIAL_RECORD
from pipelines.views.plots import learning_curve_data
from tests.support.configs import shrunk

# A sweep plus a replay: ~2 min, so make test-slow runs it (the default run keeps to ~15 min).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One small sweep shared by the tests here: 3 trials x 3 epochs, augmentation on."""
    home = tmp_path_factory.mktemp("views")
    config = shrunk(
        "digits_mlp_random.yaml",
        **{
            "search.num_samples": 3,
            "trainable.params.epochs": 3,
            "data.augment": {"noise": {"strength": 0.1}, "translate": {"p": 0.5, "strength": 1}},
            "tracking.uri": f"sqlite:///{home / 'mlflow.db'}",
            "storage.path": str(home / "ray_results"),
            "data.cache": False,
        },
    )
    return run_sweep(config, progress=False)


def test_plots_on_the_parent_are_pngs_built_from_the_recorded_numbers(
    finished: Any, tmp_path: Path
) -> None:
    client = MlflowClient(finished.mlflow_tracking_uri)
    parent = finished.mlflow_parent_run_id
    names = {Path(a.path).name for a in client.list_artifacts(parent, "plots")}
    assert {"learning_curves.png", "parallel_coordinates.png", "lr_schedule.png"} <= names
    assert "train_val_gap.png" in names
    for name in names:
        local = Path(client.download_artifacts(parent, f"plots/{name}", str(tmp_path)))
        assert local.read_bytes()[:8] == PNG, name

    # The learning curves are the MLflow metric history of every trial, point for point.
    history = load_sweep_history(finished.mlflow_tracking_uri, parent)
    curves = learning_curve_data(history)
    assert len(curves) == 3
    for trial in history.trials:
        recorded = client.get_metric_history(trial.run_id, finished.metric)
        assert curves[trial.name] == sorted((int(m.step), float(m.value)) for m in recorded)


def test_report_prints_the_top_trials_and_writes_the_plots(finished: Any, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        [
            "report",
            finished.experiment_name,
            "--tracking-uri",
            finished.mlflow_tracking_uri,
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "top trials by val_loss" in result.stdout
    assert "Best config" in result.stdout
    assert (out / "learning_curves.png").read_bytes()[:8] == PNG

    missing = CliRunner().invoke(
        app, ["report", "no_such_sweep", "--tracking-uri", finished.mlflow_tracking_uri]
    )
    assert missing.exit_code == 2
    assert "no MLflow experiment named 'no_such_sweep'" in missing.stderr


def test_each_trial_records_what_reproduces_it_and_replay_does(finished: Any) -> None:
    client = MlflowClient(finished.mlflow_tracking_uri)
    history = load_sweep_history(finished.mlflow_tracking_uri, finished.mlflow_parent_run_id)
    trial = history.ranked()[0]
    tags = client.get_run(trial.run_id).data.tags
    assert tags["tunepipe.code_version"]
    assert "torch" in json.loads(tags["tunepipe.packages"])
    assert tags["tunepipe.data_fingerprint"] == finished_fingerprint(client, finished)
    assert tags["tunepipe.seed"] == "7"
    record_path = client.download_artifacts(trial.run_id, TRIAL_RECORD)
    record = json.loads(Path(record_path).read_text())
    assert record["hparams"]["lr"] == pytest.approx(float(trial.params["lr"]))
    assert record["config"]["name"] == finished.experiment_name

    result = CliRunner().invoke(
        app, ["replay", trial.run_id, "--tracking-uri", finished.mlflow_tracking_uri]
    )
    assert result.exit_code == 0, result.output
    assert "reproduced" in result.stdout and "data matches" in result.stdout


def finished_fingerprint(client: MlflowClient, finished: Any) -> str:
    tags = client.get_run(finished.mlflow_parent_run_id).data.tags
    return str(tags["tunepipe.data_fingerprint"])


def test_each_child_run_shows_its_own_device_and_usage_per_epoch(finished: Any) -> None:
    client = MlflowClient(finished.mlflow_tracking_uri)
    history = load_sweep_history(finished.mlflow_tracking_uri, finished.mlflow_parent_run_id)
    for trial in history.trials:
        run = client.get_run(trial.run_id)
        assert run.data.tags["tunepipe.device"] == "cpu"
        assert len(run.data.tags["tunepipe.node_id"]) == 56  # a Ray node id, hex
        # MLflow's "System metrics" tab shows the system/ metrics: one point per epoch.
        for name in ("cpu_utilization_percentage", "process_memory_peak_megabytes"):
            points = client.get_metric_history(trial.run_id, f"system/{name}")
            assert sorted(int(p.step) for p in points) == [1, 2, 3], name
        memory = client.get_metric_history(trial.run_id, "system/process_memory_peak_megabytes")
        assert all(100 < p.value < 8000 for p in memory)  # a torch trial's resident memory
        busy = client.get_metric_history(trial.run_id, "system/cpu_utilization_percentage")
        assert all(p.value > 1 for p in busy)
        assert "system/gpu_memory_peak_megabytes" not in run.data.metrics  # no GPU here
