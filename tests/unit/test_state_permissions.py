"""tunepipe's state is private: folders it creates are 0700, its database and lock files 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.paths import ensure_home, prepare_sqlite_store, private_dir, private_file
from pipelines.retrain.lock import experiment_lock


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[int]:
    """The usual umask (022), under which files are world-readable unless made otherwise."""
    previous = os.umask(0o022)
    yield 0o022
    os.umask(previous)


def test_created_folders_are_0700_at_every_level_and_the_umask_is_left_alone(
    tmp_path: Path, permissive_umask: int
) -> None:
    tmp_path.chmod(0o755)
    made = private_dir(tmp_path / "a" / "b" / "c")
    for folder in (tmp_path / "a", tmp_path / "a" / "b", made):
        assert _mode(folder) == 0o700, folder
    assert _mode(tmp_path) == 0o755  # a folder that existed keeps the mode its owner chose
    assert os.umask(permissive_umask) == permissive_umask  # not narrowed for the process


def test_the_state_folder_is_created_private(isolated_home: Path) -> None:
    assert not isolated_home.exists()
    assert ensure_home() == isolated_home
    assert _mode(isolated_home) == 0o700


def test_files_are_created_0600_and_an_existing_file_is_left_as_it_is(tmp_path: Path) -> None:
    created = private_file(tmp_path / "state" / "file")
    assert _mode(created) == 0o600 and _mode(created.parent) == 0o700
    created.write_text("kept")
    private_file(created)
    assert created.read_text() == "kept"


def test_the_retrain_lock_and_its_folders_are_private(isolated_home: Path) -> None:
    with experiment_lock("digits") as lock:
        assert _mode(lock) == 0o600
        assert _mode(lock.parent) == 0o700  # locks/
        assert _mode(isolated_home) == 0o700  # created by the first retrain, private


def test_the_sqlite_store_is_private_before_and_after_mlflow_fills_it(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    database = tmp_path / "state" / "mlflow.db"
    uri = f"sqlite:///{database}"
    prepare_sqlite_store(uri)
    assert _mode(database) == 0o600 and database.stat().st_size == 0
    assert _mode(database.parent) == 0o700
    assert _mode(tmp_path / "state" / "mlartifacts") == 0o700
    # MLflow takes the empty file as a new database and creates its tables in it.
    experiment = MlflowClient(uri).create_experiment("private")
    assert MlflowClient(uri).get_experiment(experiment).name == "private"
    assert _mode(database) == 0o600 and database.stat().st_size > 0


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "sqlite:///:memory:", "sqlite://"])
def test_other_stores_get_no_files(isolated_home: Path, uri: str) -> None:
    prepare_sqlite_store(uri)  # in the test's empty working directory
    assert list(Path.cwd().iterdir()) == []
    assert not isolated_home.exists()
