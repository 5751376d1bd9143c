"""A trial whose worker process is killed mid-way resumes from its last checkpoint."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from pipelines import run_sweep
from tests.conftest import shrunk

pytestmark = pytest.mark.usefixtures("ray_local")


class KillWorkerOnce(Callback):
    """SIGKILLs the process running a trial the first time it reports ``at_epoch``."""

    def __init__(self, at_epoch: int) -> None:
        self.at_epoch = at_epoch
        self.killed: dict[str, int] = {}

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if not self.killed and result.get("epoch") == self.at_epoch:
            self.killed[trial.trial_id] = result["pid"]
            os.kill(result["pid"], signal.SIGKILL)


def test_killed_trial_continues_its_epoch_counter_from_the_checkpoint() -> None:
    config = shrunk(
        "digits_mlp_random.yaml",
        **{
            "search.num_samples": 1,
            "trainable.params.epochs": 5,
            "fault_tolerance.max_failures": 1,
        },
    )
    killer = KillWorkerOnce(at_epoch=2)
    summary = run_sweep(config, callbacks=[killer], progress=False)

    assert len(killer.killed) == 1, "the fault was not injected"
    (result,) = list(summary.results)
    assert result.error is None
    epochs = list(result.metrics_dataframe["epoch"])
    pids = set(result.metrics_dataframe["pid"])
    assert max(epochs) == 5
    assert epochs.count(1) == 1, f"the trial restarted from scratch: {epochs}"
    assert len(epochs) <= 5 + 1, f"more than one epoch was redone: {epochs}"
    assert next(iter(killer.killed.values())) in pids and len(pids) == 2  # a new process took over

    client = MlflowClient(summary.mlflow_tracking_uri)
    (child,) = client.search_runs(
        [summary.mlflow_experiment_id], filter_string="tags.`tunepipe.kind` = 'trial'"
    )
    assert child.info.status == "FINISHED"
    assert "tunepipe.last_retry_error" in child.data.tags
    assert child.data.tags["tunepipe.end_reason"] == "completed"
