"""The one place that decides where a sweep's state lives on disk by default.

Everything a sweep writes locally goes under one project-local folder, ``.tunepipe/`` in the
current working directory (override with ``TUNEPIPE_HOME``):

- ``.tunepipe/mlflow.db``: the MLflow tracking store (SQLite);
- ``.tunepipe/mlartifacts/``: MLflow artifacts (checkpoints, models, config files);
- ``.tunepipe/ray_results/``: Ray Tune's trial results and checkpoints.

A cluster run points these elsewhere through the config (``storage.path``, ``tracking.uri``) or the
``TUNEPIPE_STORAGE`` and ``MLFLOW_TRACKING_URI`` environment variables (what a cluster's pods or
nodes set once for every config), never through code changes.
"""

from __future__ import annotations

import os
from pathlib import Path


def tunepipe_home() -> Path:
    """Return the project-local state folder (``$TUNEPIPE_HOME`` or ``./.tunepipe``), absolute."""
    return Path(os.environ.get("TUNEPIPE_HOME", ".tunepipe")).resolve()


def default_storage_path() -> str:
    """Return where Ray Tune stores results and checkpoints unless the config says otherwise.

    ``$TUNEPIPE_STORAGE`` (a shared folder or a URI such as ``s3://bucket/prefix``), else
    ``ray_results`` in the state folder.
    """
    return os.environ.get("TUNEPIPE_STORAGE") or str(tunepipe_home() / "ray_results")


def default_tracking_uri() -> str:
    """Return the MLflow tracking URI: ``$MLFLOW_TRACKING_URI`` or SQLite in the state folder."""
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri:
        return env_uri
    return f"sqlite:///{tunepipe_home() / 'mlflow.db'}"


def default_artifact_root() -> Path:
    """Return where MLflow stores artifacts for the embedded SQLite store."""
    return tunepipe_home() / "mlartifacts"


def artifact_root_for(tracking_uri: str) -> Path | None:
    """Return the artifact folder beside a local SQLite store, or None for other stores.

    Without an explicit location MLflow would put artifacts in ``./mlruns`` of whatever folder
    the process happens to run in.
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return Path(tracking_uri[len(prefix) :]).resolve().parent / "mlartifacts"
