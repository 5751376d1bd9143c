"""A sweep tracked by a real ``mlflow server`` over HTTP instead of the embedded SQLite store."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipelines import run_sweep
from pipelines.views.ui import start_mlflow_server, stop_mlflow_server, wait_until_up
from tests.support.configs import shrunk


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow  # an mlflow server process and a sweep against it: about 40 s on 2 CPUs
@pytest.mark.usefixtures("ray_local")
def test_sweep_records_parent_children_and_model_on_a_tracking_server(tmp_path: Path) -> None:
    port = _free_port()
    server = start_mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", "127.0.0.1", port)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(uri, server, timeout=90)
        config = shrunk(
            "digits_mlp_random.yaml",
            **{"search.num_samples": 2, "trainable.params.epochs": 2, "tracking.uri": uri},
        )
        summary = run_sweep(config, progress=False)

        client = MlflowClient(uri)
        children = client.search_runs(
            [summary.mlflow_experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{summary.mlflow_parent_run_id}'",
        )
        assert len(children) == 2
        for child in children:
            assert len(client.get_metric_history(child.info.run_id, "val_loss")) == 2
        version = client.get_model_version_by_alias("digits_mlp", "challenger")
        assert version.version == summary.model_version
        assert version.run_id == summary.mlflow_parent_run_id
    finally:
        stop_mlflow_server(server)
    with pytest.raises(ProcessLookupError):
        os.killpg(server.pid, 0)  # no worker of the server outlived it
