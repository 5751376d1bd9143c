"""Reproducibility: what each trial records, and ``tunepipe replay`` to re-train one from it.

Every child run carries, as tags, the code version (git commit, ``-dirty`` when the working tree
has changes), the versions of the packages that shape results, the data fingerprint and the
trial's seed and index (which seed its augmentation and shuffling), plus the artifact
``reproduce/trial.json`` with the resolved experiment config and the trial's typed
hyperparameters. :func:`replay` reads them back, trains the trial again outside Tune with the
same epoch loop, and compares its final validation metric with the recorded one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError

#: Packages whose versions can change a trial's numbers.
PACKAGES = ("ray", "mlflow", "numpy", "scikit-learn", "torch", "tensorflow-cpu", "keras", "optuna")
TRIAL_ARTIFACT = "reproduce/trial.json"
#: Default absolute tolerance of ``tunepipe replay`` on the final validation metric. On one
#: machine the CPU replay matches exactly; across machines float summation order may differ.
DEFAULT_TOLERANCE = 0.005


def code_version() -> str:
    """Return the git commit of the project's code (``-dirty`` if modified), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"  # not a git checkout (an installed wheel) or no git
    return f"{commit}-dirty" if dirty else commit


def package_versions() -> dict[str, str]:
    """Return the installed versions of :data:`PACKAGES` (absent ones left out)."""
    versions = {}
    for name in PACKAGES:
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

    def tags(self) -> dict[str, str]:
        """Return the record as MLflow tags."""
        return {
            "tunepipe.code_version": self.code_version,
            "tunepipe.packages": json.dumps(self.packages, sort_keys=True),
            "tunepipe.data_fingerprint": self.data_fingerprint,
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
        }


def _plain(value: Any) -> Any:
    """Turn numpy scalars (searchers propose them) into Python ones for JSON."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


@dataclass(frozen=True)
class ReplayResult:
    """A replayed trial's final metric next to the recorded one."""

    metric: str
    recorded: float
    replayed: float
    epochs: int
    tolerance: float
    data_matches: bool

    @property
    def difference(self) -> float:
        """Absolute difference of the two final values."""
        return abs(self.replayed - self.recorded)

    @property
    def reproduced(self) -> bool:
        """True when the replay is within tolerance of the record."""
        return math.isfinite(self.replayed) and self.difference <= self.tolerance


def replay(tracking_uri: str, run_id: str, tolerance: float = DEFAULT_TOLERANCE) -> ReplayResult:
    """Re-train the trial recorded in child run ``run_id`` outside Tune and compare its metric.

    Raises:
        ConfigError: If the run does not exist or holds no reproducibility record.

    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file
    client = MlflowClient(tracking_uri)
    try:
        client.get_run(run_id)
        with tempfile.TemporaryDirectory(prefix="tunepipe-replay-") as folder:
            local = client.download_artifacts(run_id, TRIAL_ARTIFACT, folder)
            record: dict[str, Any] = json.loads(Path(local).read_text())
    except MlflowException as exc:
        raise ConfigError(
            f"cannot read trial run {run_id!r} from {tracking_uri}: {str(exc).splitlines()[0]}",
            key="RUN_ID",
            fix="pass the run id of a trial (a child run of a sweep) and its --tracking-uri",
        ) from None
    from pipelines.config import ExperimentConfig

    config = ExperimentConfig.model_validate(record["config"])
    history = client.get_metric_history(run_id, config.metric)
    if not history:
        raise ConfigError(
            f"run {run_id} recorded no {config.metric}", key="RUN_ID", fix="pick a trial run"
        )
    last = max(history, key=lambda m: m.step)
    reports, fingerprint = _train_again(config, record)
    epochs = int(last.step)
    replayed = [r for r in reports if int(r.get("epoch", -1)) == epochs]
    value = float(replayed[-1][config.metric]) if replayed else math.nan
    return ReplayResult(
        metric=config.metric,
        recorded=float(last.value),
        replayed=value,
        epochs=epochs,
        tolerance=tolerance,
        data_matches=fingerprint == record["data_fingerprint"],
    )


def _train_again(config: Any, record: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Run the trial's epoch loop in a private local Ray (for Ray Data), reports collected."""
    import ray

    from pipelines.data import prepare_data
    from pipelines.tuning import trial_settings
    from pipelines.validate import plan_sweep
    from trainables import reporting
    from trainables.adapter import make_trial_function

    plan = plan_sweep(config)
    cpus = max(1, int(config.resources.cpu))
    started = not ray.is_initialized()
    if started:
        ray.init(
            address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.ERROR
        )
    try:
        data = prepare_data(config.data, cpus_per_trial=cpus)
        run_trial = make_trial_function(trial_settings(plan))
        with reporting.offline(cpus, int(record["trial_index"])) as session:
            run_trial(dict(record["hparams"]), data)
        return session.reports, data.fingerprint
    finally:
        if started:
            ray.shutdown()
