"""The MLflow client every tracking module uses, and the experiment a sweep records into."""

from __future__ import annotations

import os

from mlflow.tracking import MlflowClient

from pipelines.paths import artifact_root_for, prepare_sqlite_store
from pipelines.secrets import with_credentials

# Private by default: MLflow 3 reports usage to its developers unless told not to (and each
# wrapped client call pays for it). A user who wants it sets the variable to "false".
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# A sweep's writes wait in a spool while MLflow is down (pipelines.tracking.spool), which tries
# again by itself: MLflow's own default (7 retries, backing off up to ~4 min per call) would only
# delay knowing the server is down, and keep a command that reads silent for minutes.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def client_for(tracking_uri: str) -> MlflowClient:
    """Return an MLflow client for ``tracking_uri`` (cheap: MLflow caches the store).

    A database password held back from the URI (:mod:`pipelines.secrets`) is put back here.
    """
    prepare_sqlite_store(tracking_uri)  # the database file 0600 before MLflow makes it
    return MlflowClient(tracking_uri=with_credentials(tracking_uri))


def get_or_create_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """Return the id of experiment ``name``, creating it if needed.

    With a local SQLite store, artifacts go to a folder beside the database (paths.py).
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    root = artifact_root_for(tracking_uri)
    location = (root / name).as_uri() if root is not None else None
    return str(client.create_experiment(name, artifact_location=location))


def experiment_id(tracking_uri: str, name: str) -> str:
    """Return the id of experiment ``name`` in ``tracking_uri``, creating it if needed."""
    return get_or_create_experiment(client_for(tracking_uri), name, tracking_uri)
