"""``tunepipe replay RUN_ID``: re-train one recorded trial outside Tune and compare its metric.

Every trial records what reproduces it (:mod:`pipelines.tracking.record`): the resolved config,
its typed hyperparameters, its index (which seeds augmentation and shuffling), the code and
package versions and the data fingerprint. :func:`replay` reads that record back, trains the
trial again through the same epoch loop, and compares its final validation metric with the
recorded one.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import ExperimentConfig
from pipelines.errors import ConfigError
from pipelines.tracking import queries, schema
from pipelines.tracking.queries import RunNotFound
from trainables.results import EPOCH

#: Default absolute tolerance of ``tunepipe replay`` on the final validation metric. On one
#: machine the CPU replay matches exactly; across machines float summation order may differ.
DEFAULT_TOLERANCE = 0.005


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
    try:
        queries.get_run(tracking_uri, run_id)
        with tempfile.TemporaryDirectory(prefix="tunepipe-replay-") as folder:
            local = queries.download(tracking_uri, run_id, schema.TRIAL_RECORD, Path(folder))
            record: dict[str, Any] = json.loads(local.read_text())
    except RunNotFound as exc:
        raise ConfigError(
            f"cannot read trial run {run_id!r} from {tracking_uri}: {exc}",
            key="RUN_ID",
            fix="pass the run id of a trial (a child run of a sweep) and its --tracking-uri",
        ) from None
    config = ExperimentConfig.model_validate(record["config"])
    history = queries.metric_history(tracking_uri, run_id, config.metric)
    if not history:
        raise ConfigError(
            f"run {run_id} recorded no {config.metric}", key="RUN_ID", fix="pick a trial run"
        )
    epochs, recorded = history[-1]
    reports, fingerprint = _train_again(config, record)
    replayed = [r for r in reports if int(r.get(EPOCH, -1)) == epochs]
    value = float(replayed[-1][config.metric]) if replayed else math.nan
    return ReplayResult(
        metric=config.metric,
        recorded=recorded,
        replayed=value,
        epochs=epochs,
        tolerance=tolerance,
        data_matches=fingerprint == record["data_fingerprint"],
    )


def _user(config: ExperimentConfig) -> bool:
    """Whether the config's trainable was the user's code (no bundled model named)."""
    return config.trainable.model is None


def _train_again(
    config: ExperimentConfig, record: dict[str, Any]
) -> tuple[list[dict[str, Any]], str]:
    """Run the trial's epoch loop in a private local Ray (for Ray Data), reports collected."""
    import ray

    from pipelines.data import prepare_data
    from pipelines.sweep.plan import plan_sweep
    from pipelines.sweep.tuner import trial_settings
    from trainables import reporting
    from trainables.adapter import make_trial_function

    search = [Path(record["search_path"])] if record.get("search_path") else None
    if config.trainable.target is None and record.get("trainable") is None and _user(config):
        raise ConfigError(
            "the trial trained the user's code passed as a Python object that cannot be "
            "imported again (defined in __main__)",
            key="RUN_ID",
            fix="replay it from Python: define the trainable in a module, then sweep and replay",
        )
    plan = plan_sweep(config, record.get("trainable"), search_paths=search)
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
