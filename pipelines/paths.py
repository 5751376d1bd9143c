"""The one place that decides where a sweep's state lives on disk by default.

Everything a sweep writes locally goes under one project-local folder, ``.tunepipe/`` in the
current working directory (override with ``TUNEPIPE_HOME``):

- ``.tunepipe/mlflow.db``: the MLflow tracking store (SQLite);
- ``.tunepipe/mlartifacts/``: MLflow artifacts (checkpoints, models, config files);
- ``.tunepipe/ray_results/``: Ray Tune's trial results and checkpoints.

A cluster run points these elsewhere through the config (``storage.path``, ``tracking.uri``) or the
``TUNEPIPE_STORAGE`` and ``MLFLOW_TRACKING_URI`` environment variables (what a cluster's pods or
nodes set once for every config), never through code changes.

The state is private to the user who runs tunepipe: folders it creates are ``0700`` and its
database and lock files ``0600`` (:func:`private_dir`, :func:`private_file`,
:func:`prepare_sqlite_store`), whatever the process's umask, which is only narrowed for the
instant a folder is made.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.secrets import hold_credentials

#: Folders tunepipe creates for its state: the owner only.
PRIVATE_DIR_MODE = 0o700
#: Databases and lock files tunepipe creates: the owner reads and writes, nobody else.
PRIVATE_FILE_MODE = 0o600

# The umask is process-wide: threads that create folders take turns narrowing it.
_UMASK_LOCK = threading.Lock()


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
    """Return the MLflow tracking URI: ``$MLFLOW_TRACKING_URI`` or SQLite in the state folder.

    A password in ``$MLFLOW_TRACKING_URI`` is taken out (:mod:`pipelines.secrets`).
    """
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri:
        return hold_credentials(env_uri)
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


def private_dir(path: Path) -> Path:
    """Create folder ``path`` and any missing parents with mode 0700; return it.

    Folders that exist already keep their mode: the user chose it.
    """
    if path.is_dir():
        return path
    # makedirs' mode applies to the last folder only; the umask covers the parents as well.
    with _narrow_umask(0o077):
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    return path


def private_file(path: Path) -> Path:
    """Create an empty file ``path`` with mode 0600 (in a 0700 folder) unless it exists."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return path
    os.close(fd)
    return path


def ensure_home() -> Path:
    """Return the state folder (:func:`tunepipe_home`), created with mode 0700 if missing."""
    return private_dir(tunepipe_home())


def prepare_sqlite_store(tracking_uri: str) -> None:
    """Create a local SQLite tracking store's file (0600) and folders (0700) before MLflow.

    MLflow would create them with the umask's modes (world-readable, usually); an empty file
    is a valid SQLite database, which MLflow fills with its tables. Other stores: nothing.
    """
    artifacts = artifact_root_for(tracking_uri)
    location = tracking_uri[len("sqlite:///") :]
    if artifacts is None or location in ("", ":memory:"):
        return
    private_file(Path(location).resolve())
    private_dir(artifacts)


@contextmanager
def _narrow_umask(mask: int) -> Iterator[None]:
    with _UMASK_LOCK:
        previous = os.umask(mask)
        try:
            yield
        finally:
            os.umask(previous)
