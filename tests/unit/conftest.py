"""Fixtures of the unit tests that need a real, empty MLflow store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its tables and nothing else, made once per module."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()  # MLflow creates its tables
    return path


@pytest.fixture
def uri(empty_store: Path, tmp_path: Path) -> str:
    """A copy of the empty store for one test (creating the tables takes seconds)."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
