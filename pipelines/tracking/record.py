"""What every trial records so that it can be reproduced, and where that record lives.

Every child run carries, as tags, the code version (git commit, ``-dirty`` when the working tree
has changes), the versions of the packages that shape results, the data fingerprint and the
trial's seed and index (which seed its augmentation and shuffling), plus the artifact
``reproduce/trial.json`` with the resolved experiment config and the trial's typed
hyperparameters. ``tunepipe replay`` (:mod:`pipelines.sweep.replay`) reads it back.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pipelines.tracking import schema

#: Packages whose versions can change any trial's numbers; each framework's trainable entry adds
#: its own (``TrainableInfo.packages``).
CORE_PACKAGES = ("ray", "mlflow", "numpy", "scikit-learn", "optuna")


def code_version() -> str:
    """Return the git commit of the project's code (``-dirty`` if modified), or ``unknown``."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"  # not a git checkout (an installed wheel) or no git
    return f"{commit}-dirty" if dirty else commit


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def package_versions(framework_packages: Iterable[str] = ()) -> dict[str, str]:
    """Return the installed versions of the core packages and ``framework_packages``.

    Packages that are not installed are left out.
    """
    versions = {}
    for name in dict.fromkeys([*CORE_PACKAGES, *framework_packages]):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass(frozen=True)
class SweepRecord:
    """What every trial of a sweep shares in its reproducibility record."""

    config: dict[str, Any]
    code_version: str
    packages: dict[str, str]
    data_fingerprint: str
    #: The user's trainable as ``module:attribute`` (None: a bundled model, or an object that
    #: cannot be imported again, such as a notebook's function).
    trainable: str | None = None
    #: The folder the user's module was imported from (None: an installed package).
    search_path: str | None = None

    def tags(self) -> dict[str, str]:
        """Return the record as MLflow tags."""
        return {
            schema.CODE_VERSION: self.code_version,
            schema.PACKAGES: json.dumps(self.packages, sort_keys=True),
            schema.DATA_FINGERPRINT: self.data_fingerprint,
        }

    def trial(self, hparams: dict[str, Any], trial_index: int) -> dict[str, Any]:
        """Return one trial's full record (the ``reproduce/trial.json`` artifact)."""
        return {
            "config": self.config,
            "hparams": json.loads(json.dumps(hparams, default=_plain)),
            "trial_index": trial_index,
            "code_version": self.code_version,
            "packages": self.packages,
            "data_fingerprint": self.data_fingerprint,
            "trainable": self.trainable,
            "search_path": self.search_path,
        }


def _plain(value: Any) -> Any:
    """Turn numpy scalars (searchers propose them) into Python ones for JSON."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)
