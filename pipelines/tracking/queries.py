"""Reading what MLflow recorded: runs, their trials, metric histories, artifacts and models.

The read side of the one door to MLflow. Everything outside :mod:`pipelines.tracking` that
needs an earlier sweep (``--extend``, warm starts, retraining, reports, the UI link, replay) asks
here and gets plain dataclasses back, never MLflow's own entities, so MLflow's API can change in
this package alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.tracking import schema
from pipelines.tracking.client import client_for

#: Most runs one search returns; sweeps here have tens to hundreds of trials.
MAX_RESULTS = 10_000


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as tunepipe reads it.

    Attributes:
        run_id: The run's id.
        experiment_id: Its experiment.
        status: ``RUNNING``, ``FINISHED``, ``FAILED`` or ``KILLED``.
        start_time: Milliseconds since the epoch.
        tags: Every tag (names in :mod:`~pipelines.tracking.schema`).
        params: Every param, as MLflow stores them (strings).
        metrics: Each metric's latest value.

    """

    run_id: str
    experiment_id: str
    status: str = "FINISHED"
    start_time: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The run's display name (its id when it has none)."""
        return self.tags.get(schema.RUN_NAME, self.run_id)


@dataclass(frozen=True)
class ModelVersionRecord:
    """One registered model version: its number, the run that logged it and its tags."""

    name: str
    version: str
    run_id: str
    tags: dict[str, str] = field(default_factory=dict)


class RunNotFound(LookupError):
    """The tracking store has no run with that id (the message says MLflow's reason)."""


def _record(run: Any) -> RunRecord:
    return RunRecord(
        run_id=run.info.run_id,
        experiment_id=str(run.info.experiment_id),
        status=run.info.status,
        start_time=int(run.info.start_time or 0),
        tags=dict(run.data.tags),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
    )


def get_run(tracking_uri: str, run_id: str) -> RunRecord:
    """Return run ``run_id``.

    Raises:
        RunNotFound: If the store has no such run.

    """
    from mlflow.exceptions import MlflowException

    try:
        return _record(client_for(tracking_uri).get_run(run_id))
    except MlflowException as exc:
        raise RunNotFound(str(exc).splitlines()[0]) from None


def experiment_name(tracking_uri: str, experiment_id: str) -> str:
    """Return the name of experiment ``experiment_id``."""
    return str(client_for(tracking_uri).get_experiment(experiment_id).name)


def find_experiment(tracking_uri: str, name: str) -> str | None:
    """Return the id of experiment ``name``, or None when there is none."""
    found = client_for(tracking_uri).get_experiment_by_name(name)
    return None if found is None else str(found.experiment_id)


def experiment_names(tracking_uri: str) -> list[str]:
    """Return the names of the store's experiments (MLflow's ``Default`` left out), sorted."""
    experiments = client_for(tracking_uri).search_experiments()
    return sorted(e.name for e in experiments if e.name != "Default")


def search(
    tracking_uri: str,
    experiment_id: str,
    filter_string: str,
    *,
    newest_first: bool = False,
    max_results: int = MAX_RESULTS,
) -> list[RunRecord]:
    """Return the experiment's runs that match ``filter_string`` (MLflow's search syntax)."""
    order = ["attributes.start_time DESC"] if newest_first else None
    runs = client_for(tracking_uri).search_runs(
        [experiment_id], filter_string=filter_string, order_by=order, max_results=max_results
    )
    return [_record(run) for run in runs]


def sweep_runs(tracking_uri: str, experiment_id: str) -> list[RunRecord]:
    """Return the experiment's sweeps (parent runs), newest first."""
    return search(
        tracking_uri, experiment_id, schema.of_kind(schema.KIND_SWEEP), newest_first=True
    )


def trial_runs(tracking_uri: str, experiment_id: str, sweep_run_id: str) -> list[RunRecord]:
    """Return the trials (child runs) of sweep ``sweep_run_id``."""
    return search(tracking_uri, experiment_id, schema.children_of(sweep_run_id))


def retrain_runs(tracking_uri: str, experiment_id: str, limit: int = 100) -> list[RunRecord]:
    """Return the experiment's retrain re-tunes (sweep runs a retrain made), newest first."""
    query = f"tags.`{schema.RETRAIN}` = 'true'"
    return search(tracking_uri, experiment_id, query, newest_first=True, max_results=limit)


def latest_sweep(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str | None:
    """Return the newest sweep run of the experiment (or ``run_id``, if it is one), else None."""
    query = schema.of_kind(schema.KIND_SWEEP)
    if run_id:
        query += f" and attributes.run_id = '{run_id}'"
    runs = search(tracking_uri, experiment_id, query, newest_first=True, max_results=1)
    return runs[0].run_id if runs else None


def metric_history(tracking_uri: str, run_id: str, metric: str) -> list[tuple[int, float]]:
    """Return every recorded ``(step, value)`` of ``metric`` on the run, sorted by step."""
    points = client_for(tracking_uri).get_metric_history(run_id, metric)
    return sorted((int(p.step), float(p.value)) for p in points)


def download(tracking_uri: str, run_id: str, artifact_path: str, folder: Path) -> Path:
    """Download an artifact (a file or a folder) of the run into ``folder``; return its path.

    Raises:
        RunNotFound: If the run or the artifact does not exist.

    """
    from mlflow.exceptions import MlflowException

    # A progress bar per small download only clutters logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        local = client_for(tracking_uri).download_artifacts(run_id, artifact_path, str(folder))
    except (MlflowException, OSError) as exc:
        raise RunNotFound(str(exc).splitlines()[0]) from None
    return Path(local)


def model_version_by_alias(
    tracking_uri: str, model_name: str, alias: str
) -> ModelVersionRecord | None:
    """Return the version of ``model_name`` that holds ``alias``, or None (no model or alias)."""
    from mlflow.exceptions import MlflowException

    try:
        version = client_for(tracking_uri).get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    return ModelVersionRecord(
        model_name, str(version.version), str(version.run_id), dict(version.tags or {})
    )


def versions_logged_by(tracking_uri: str, run_id: str) -> list[str]:
    """Return the registered model versions that run ``run_id`` logged, as strings."""
    versions = client_for(tracking_uri).search_model_versions(f"run_id = '{run_id}'")
    return [str(v.version) for v in versions]
