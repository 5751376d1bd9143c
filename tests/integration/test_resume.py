"""A trial whose worker process is killed mid-way resumes from its last checkpoint."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from pipelines import run_sweep
from tests.support.configs import shrunk

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


@pytest.mark.parametrize(
    "framework", ["torch", pytest.param("tensorflow", marks=pytest.mark.slow)]
)
def test_killed_trial_continues_its_epoch_counter_from_the_checkpoint(framework: str) -> None:
    # MNIST CNN epochs (~1.5 s) rather than digits MLP ones (~0.1 s): the kill must land while
    # the trial still runs, even when a loaded machine delays the driver's callback by seconds.
    config = shrunk(
        "mnist_cnn.yaml",
        **{
            "trainable.framework": framework,
            "search.method": "random",
            "search.options": {},
            "search.num_samples": 1,
            "scheduler": {"name": "fifo"},
            "trainable.params.epochs": 5,
            "fault_tolerance.max_failures": 1,
        },
    )
    killer = KillWorkerOnce(at_epoch=2)
    summary = run_sweep(config, callbacks=[killer], progress=False)

    assert len(killer.killed) == 1, "the fault was not injected"
    (result,) = list(summary.results)
    assert result.error is None
    assert result.metrics["pid"] != next(iter(killer.killed.values()))  # a new process finished

    # Every report, in order, from MLflow: Tune rewrites its own result files on restore.
    client = MlflowClient(summary.mlflow_tracking_uri)
    (child,) = client.search_runs(
        [summary.mlflow_experiment_id], filter_string="tags.`tunepipe.kind` = 'trial'"
    )
    history = client.get_metric_history(child.info.run_id, "epoch")
    epochs = [int(m.value) for m in sorted(history, key=lambda m: (m.timestamp, m.step))]
    assert max(epochs) == 5
    assert epochs.count(1) == 1, f"the trial restarted from scratch: {epochs}"
    # The epochs redone after the restore are not recorded twice: one point per epoch.
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5], epochs
    assert child.info.status == "FINISHED"
    assert "tunepipe.last_retry_error" in child.data.tags
    assert child.data.tags["tunepipe.end_reason"] == "completed"
