"""A trial's checkpoints are damaged or deleted under it; the sweep goes on, nothing lost.

The faults are real: a checkpoint's weights cut short on disk and the worker SIGKILLed (what a
full disk or a killed upload leaves), and a checkpoint deleted after Tune's last snapshot of
the experiment (what a driver killed between the two leaves). Each test ends by reconciling
Tune, MLflow, the checkpoints and the registry, or by resuming Tune's own experiment.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import pytest
from ray import tune
from ray.tune import Callback

from pipelines import run_sweep
from pipelines.sweep.checkpoint_repair import (
    fill_missing_checkpoints,
    forget_missing_checkpoints,
)
from tests.support.chaos import CHAOS_CONFIG
from tests.support.reconcile import reconcile
from trainables.checkpoint_manifest import write_manifest

pytestmark = pytest.mark.usefixtures("ray_local")


class DamageCheckpointAndKill(Callback):
    """Truncates the weights of the checkpoint of ``at_epoch``, then SIGKILLs its trial's worker.

    The damage is real (a file cut short on disk, as a full disk or a killed upload leaves it);
    the restore that follows must pass over that checkpoint for the one before.
    """

    def __init__(self, at_epoch: int) -> None:
        self.at_epoch = at_epoch
        self.damaged: list[str] = []
        self.epochs: list[int] = []

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.epochs.append(int(result["epoch"]))

    def on_checkpoint(
        self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        folder = Path(checkpoint.path)
        epoch = json.loads((folder / "tunepipe.json").read_text())["epoch"]
        if self.damaged or epoch != self.at_epoch:
            return
        weights = folder / "weights.npy"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        self.damaged.append(str(folder))
        os.kill(trial.last_result["pid"], signal.SIGKILL)


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before() -> None:
    # The chaos suite's model: epochs of a fixed second, so the kill lands before the next one.
    callback = DamageCheckpointAndKill(at_epoch=3)
    temp_before = set(Path(tempfile.gettempdir()).glob("tunepipe-*"))
    summary = run_sweep(
        CHAOS_CONFIG,
        {
            "search.num_samples": 1,
            "trainable.params.epochs": 5,
            "trainable.params.epoch_seconds": 1.0,
            "fault_tolerance.max_failures": 1,
        },
        callbacks=[callback],
        progress=False,
    )

    assert len(callback.damaged) == 1, "the fault was not injected"
    (result,) = list(summary.results)
    assert result.error is None
    # Epoch 3's checkpoint was damaged: the trial went on from epoch 2's and redid epoch 3.
    assert callback.epochs == [1, 2, 3, 3, 4, 5], callback.epochs
    ledger = reconcile(summary.mlflow_tracking_uri, "chaos", epochs=5)
    assert (ledger.parents, ledger.children, ledger.tune_trials) == (1, 1, 1), ledger.summary()
    assert ledger.lost_trials == [] and ledger.tune_unfinished == 0, ledger.summary()
    assert ledger.duplicated_points == 0 and ledger.missing_points == 0, ledger.summary()
    assert ledger.left_running == 0 and ledger.missing_checkpoints == 0, ledger.summary()
    assert ledger.model_versions == 1 and ledger.retries == 1, ledger.summary()
    # Neither the killed worker's nor the finished trial's temporary folders are left behind.
    assert set(Path(tempfile.gettempdir()).glob("tunepipe-*")) <= temp_before


def _counting_trial(config: dict[str, Any]) -> None:
    """Three epochs with a checkpoint each; the first run fails after epoch 2."""
    start = 0
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            start = json.loads((Path(folder) / "tunepipe.json").read_text())["epoch"]
    for epoch in range(start + 1, 4):
        with tempfile.TemporaryDirectory() as folder:
            _write_checkpoint(Path(folder), epoch)
            tune.report({"epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(folder))
        if epoch == 2 and start == 0:
            raise RuntimeError("the first run dies here")


def _write_checkpoint(folder: Path, epoch: int) -> None:
    (folder / "tunepipe.json").write_text(json.dumps({"epoch": epoch}))
    write_manifest(folder)


def _failed_first_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: int) -> Any:
    """Run ``_counting_trial`` under Tune directly, keeping ``keep`` checkpoints; its result."""
    # Tune driven directly (not through tunepipe) would keep its SIGINT handler installed.
    monkeypatch.setenv("TUNE_DISABLE_SIGINT_HANDLER", "1")
    tuner = tune.Tuner(
        _counting_trial,
        run_config=tune.RunConfig(
            name="race",
            storage_path=str(tmp_path),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep),
            verbose=0,
        ),
    )
    (failed,) = list(tuner.fit())
    return failed


def test_resume_fills_in_a_checkpoint_tune_deleted_after_its_last_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = _failed_first_run(tmp_path, monkeypatch, keep=3)
    assert failed.error is not None
    trial_folder = Path(failed.path)
    named = trial_folder / "checkpoint_000001"  # epoch 2: the snapshot's latest
    assert named.is_dir()
    # What a driver killed between Tune's checkpoint deletion and its snapshot upload leaves:
    # the named checkpoint is gone, a newer whole one (epoch 3) was uploaded after it. The
    # killed driver may never have recorded epoch 3: the trial resumes from the older epoch 1
    # (epochs 2 and 3 again), not from epoch 3, which would leave a hole in MLflow's history.
    shutil.rmtree(named)
    (trial_folder / "checkpoint_000002").mkdir()
    _write_checkpoint(trial_folder / "checkpoint_000002", 3)

    assert fill_missing_checkpoints(str(tmp_path / "race")) == [str(named)]
    assert json.loads((named / "tunepipe.json").read_text())["epoch"] == 1

    restored = tune.Tuner.restore(
        str(tmp_path / "race"), trainable=_counting_trial, resume_errored=True
    )
    (finished,) = list(restored.fit())
    assert finished.error is None
    assert fill_missing_checkpoints(str(tmp_path / "race")) == []  # nothing left to fill


def test_resume_forgets_kept_checkpoints_tune_deleted_after_its_last_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = _failed_first_run(tmp_path, monkeypatch, keep=2)
    trial_folder = Path(failed.path)
    # The snapshot keeps epochs 1 and 2; a killed driver had registered a newer one and deleted
    # epoch 1's. The resumed trial's next checkpoint makes Tune delete epoch 1's again.
    older = trial_folder / "checkpoint_000000"
    shutil.rmtree(older)

    assert fill_missing_checkpoints(str(tmp_path / "race")) == []  # the latest is whole
    assert forget_missing_checkpoints(str(tmp_path / "race")) == [str(older)]
    assert forget_missing_checkpoints(str(tmp_path / "race")) == []

    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append  # type: ignore[method-assign]
    controller_log = logging.getLogger("ray.tune.execution.tune_controller")
    controller_log.addHandler(handler)
    try:
        restored = tune.Tuner.restore(
            str(tmp_path / "race"), trainable=_counting_trial, resume_errored=True
        )
        (finished,) = list(restored.fit())
    finally:
        controller_log.removeHandler(handler)
    assert finished.error is None
    assert [r.getMessage() for r in errors] == []  # Tune handled every checkpoint whole
    assert finished.metrics["epoch"] == 3
    assert [c.path for c, _ in finished.best_checkpoints] == [
        str(trial_folder / "checkpoint_000001"),
        str(trial_folder / "checkpoint_000002"),
    ]
