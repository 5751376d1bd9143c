"""After a fault: compare the four records of a sweep, and count what was lost or duplicated.

Tune's experiment state (in the sweep's storage), MLflow's runs and metric histories, the
checkpoints in the storage and the model registry must tell one story: one parent run, one child
run per Tune trial (same trial ids), every epoch of every trial once in its history, each
trial's last checkpoint present, one registered version from the sweep, and nothing RUNNING.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Ledger:
    """What the four records of one experiment say, counted."""

    parents: int = 0
    children: int = 0
    tune_trials: int = 0
    tune_unfinished: int = 0
    lost_trials: list[str] = field(default_factory=list)
    duplicated_points: int = 0
    missing_points: int = 0
    left_running: int = 0
    missing_checkpoints: int = 0
    model_versions: int = 0
    statuses: dict[str, str] = field(default_factory=dict)
    retries: int = 0

    def assert_whole(self, trials: int) -> None:
        """Assert the sweep of ``trials`` trials came through whole: nothing lost or doubled."""
        assert self.parents == 1, self.summary()
        assert self.children == trials == self.tune_trials, self.summary()
        assert self.lost_trials == [], self.summary()
        assert self.duplicated_points == 0 and self.missing_points == 0, self.summary()
        assert self.left_running == 0 and self.tune_unfinished == 0, self.summary()
        assert self.missing_checkpoints == 0, self.summary()
        assert self.model_versions == 1, self.summary()

    def summary(self) -> str:
        """One line for assertion messages and the chaos figures."""
        return (
            f"parents={self.parents} children={self.children} tune={self.tune_trials} "
            f"(unfinished {self.tune_unfinished}, retries {self.retries}) "
            f"lost={len(self.lost_trials)} duplicated={self.duplicated_points} "
            f"missing={self.missing_points} running={self.left_running} "
            f"checkpoints_missing={self.missing_checkpoints} versions={self.model_versions}"
        )


def reconcile(tracking_uri: str, experiment: str, epochs: int) -> Ledger:
    """Count the sweep's records in MLflow, in its Tune experiment and in the registry.

    Args:
        tracking_uri: The MLflow store.
        experiment: The MLflow experiment (and registered model) name; it holds one sweep.
        epochs: Epochs each trial runs (each history must hold steps 1..epochs once).

    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    ledger = Ledger()
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment}"
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("tunepipe.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("tunepipe.kind") == "trial"]
    ledger.parents, ledger.children = len(parents), len(children)
    ledger.left_running = sum(r.info.status == "RUNNING" for r in runs)
    ledger.statuses = {r.info.run_id: r.info.status for r in runs}
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "epoch")]
        ledger.duplicated_points += len(steps) - len(set(steps))
        if child.data.tags.get("tunepipe.end_reason") == "completed":
            ledger.missing_points += len(set(range(1, epochs + 1)) - set(steps))
    ledger.model_versions = len(client.search_model_versions(f"name = '{experiment}'"))
    if len(parents) == 1:
        where = parents[0].data.tags.get("tunepipe.tune_experiment")
        if where:
            _tune_side(ledger, where, {c.data.tags.get("tunepipe.trial_id") for c in children})
    return ledger


def _tune_side(ledger: Ledger, experiment_uri: str, tracked: set[str | None]) -> None:
    """Count Tune's trials, their retries and their checkpoints in the storage."""
    from ray.tune import ExperimentAnalysis

    from pipelines.sweep.storage import filesystem

    analysis = ExperimentAnalysis(experiment_uri)
    trials: list[Any] = list(analysis.trials)
    ledger.tune_trials = len(trials)
    ledger.tune_unfinished = sum(t.status != "TERMINATED" for t in trials)
    ledger.retries = sum(int(getattr(t.run_metadata, "num_failures", 0)) for t in trials)
    ledger.lost_trials = sorted({t.trial_id for t in trials} ^ {t for t in tracked if t})
    for trial in trials:
        checkpoint = trial.checkpoint
        if checkpoint is None:
            ledger.missing_checkpoints += 1
            continue
        fs, _ = filesystem(experiment_uri)
        import pyarrow.fs

        if fs.get_file_info(checkpoint.path).type == pyarrow.fs.FileType.NotFound:
            ledger.missing_checkpoints += 1


def tunepipe(*args: str, env: dict[str, str], cwd: Path, timeout: int = 600) -> Any:
    """Run the ``tunepipe`` command line to the end; return the completed process."""
    import sys

    command = [str(Path(sys.executable).parent / "tunepipe"), *args]
    return subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
