"""``tunepipe sweep CONFIG --extend SWEEP``: more trials for a finished sweep, in the same run.

Ray Tune's restore resumes an interrupted experiment; it cannot add trials to one that finished.
An extension is a new Tune experiment whose searcher starts from everything the sweep already
tried (:mod:`pipelines.sweep.warm_start`), whose trials are nested under the sweep's own parent
run, numbered after the earlier ones, and whose best replaces the sweep's best only when it is
better.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from pipelines.config import ExperimentConfig
from pipelines.errors import ConfigError
from pipelines.sweep.warm_start import WarmStart, earlier_trials
from pipelines.tracking import queries, schema
from pipelines.tracking.queries import RunNotFound, RunRecord
from search_spaces import SearchSpace


@dataclass(frozen=True)
class PreviousBest:
    """The best result a sweep had before it was extended."""

    value: float
    config: dict[str, Any]
    trial_id: str
    epoch: int
    model_version: str | None


@dataclass(frozen=True)
class SweepToExtend:
    """An earlier sweep's parent run, checked to be extendable by the given config.

    Attributes:
        run_id: The parent run.
        experiment_id: Its MLflow experiment.
        trials: Number of trials it already has (new ones are numbered after them).
        extensions: How often it was extended before.
        data_fingerprint: The data it was tuned on (an extension must use the same).
        best: Its best so far, or None when no trial produced a finite metric.

    """

    run_id: str
    experiment_id: str
    trials: int
    extensions: int
    data_fingerprint: str
    best: PreviousBest | None


def find_sweep_to_extend(
    config: ExperimentConfig, run_id: str, option: str = "--extend"
) -> SweepToExtend:
    """Read sweep ``run_id`` from MLflow and check ``config`` may extend it.

    ``option`` is the command-line option errors name (``--resume`` checks the same identity).

    Raises:
        ConfigError: When the run does not exist, is not a sweep of this experiment, or was
            tuned for another metric or direction.

    """
    uri = config.tracking.uri
    fix = "pass the run id of a sweep's parent run (tunepipe report prints it)"
    try:
        run = queries.get_run(uri, run_id)
    except RunNotFound:
        raise ConfigError(f"no run {run_id!r} in {uri}", key=option, fix=fix) from None
    tags = run.tags
    if tags.get(schema.KIND) != schema.KIND_SWEEP:
        raise ConfigError(f"run {run_id} is not a sweep's parent run", key=option, fix=fix)
    experiment = queries.experiment_name(uri, run.experiment_id)
    if experiment != config.experiment_name:
        raise ConfigError(
            f"sweep {run_id} belongs to experiment {experiment!r}, "
            f"this config to {config.experiment_name!r}",
            key=option,
            fix="extend a sweep with the config that started it",
        )
    recorded = (tags.get(schema.METRIC), tags.get(schema.MODE))
    if recorded != (config.metric, config.mode):
        raise ConfigError(
            f"sweep {run_id} optimised {recorded[0]} ({recorded[1]}), the config "
            f"{config.metric} ({config.mode})",
            key=option,
            fix="keep metric and mode as they were, or start a new sweep",
        )
    return SweepToExtend(
        run_id=run_id,
        experiment_id=run.experiment_id,
        trials=len(queries.trial_runs(uri, run.experiment_id, run_id)),
        extensions=int(tags.get(schema.EXTENSIONS, "0")),
        data_fingerprint=tags.get(schema.DATA_FINGERPRINT, ""),
        best=_previous_best(run, config.metric),
    )


def prepare_extension(
    config: ExperimentConfig, run_id: str, space: SearchSpace, fingerprint: str
) -> tuple[SweepToExtend, WarmStart]:
    """Check sweep ``run_id`` can be extended on this data; return it and its warm start.

    Its trials were run already: none is evaluated again, but every one seeds the searcher.

    Raises:
        ConfigError: When the sweep cannot be extended by ``config`` or the data changed.

    """
    base = find_sweep_to_extend(config, run_id)
    check_same_data(base, fingerprint)
    trials = earlier_trials(
        config.tracking.uri, base.experiment_id, space, config.metric, config.mode, [run_id]
    )
    return base, WarmStart(tuple(trials), top_k=0, mode=config.mode)


def _previous_best(run: RunRecord, metric: str) -> PreviousBest | None:
    value = run.metrics.get(schema.best_metric(metric))
    tags = run.tags
    if value is None or not math.isfinite(value) or schema.BEST_CONFIG not in tags:
        return None
    return PreviousBest(
        value=float(value),
        config=json.loads(tags[schema.BEST_CONFIG]),
        trial_id=tags.get(schema.BEST_TRIAL_ID, ""),
        epoch=int(tags.get(schema.BEST_EPOCH, "0")),
        model_version=tags.get(schema.MODEL_VERSION),
    )


def check_same_data(
    sweep: SweepToExtend,
    fingerprint: str,
    option: str = "--extend",
    fix: str = "start a new sweep, or run tunepipe retrain, which warm-starts from it",
) -> None:
    """Refuse to extend (or resume) a sweep on data other than its trials were scored on.

    Raises:
        ConfigError: When the fingerprints differ.

    """
    if sweep.data_fingerprint and sweep.data_fingerprint != fingerprint:
        raise ConfigError(
            f"the data changed since sweep {sweep.run_id} (fingerprint "
            f"{sweep.data_fingerprint} then, {fingerprint} now): its scores are not comparable",
            key=option,
            fix=fix,
        )
