"""Warm starts: what earlier sweeps learned, read from MLflow and handed to the next searcher.

Ray Tune cannot continue a finished experiment, and a retrain on new data should not search from
scratch either. MLflow holds every earlier trial (its hyperparameters and metric), so a new
sweep is warm-started from there, whichever machine ran the earlier ones:

- the ``top_k`` best earlier configurations are evaluated first (``points_to_evaluate``), since
  on data that drifted a little they are the likeliest winners;
- a model-based searcher (TPE, GP) starts from a study that already holds every earlier result
  (:func:`seeded_optuna_storage`), so its first own proposal is already informed;
- the searcher's seed moves on by the number of earlier trials, so it does not draw the same
  configurations as the sweep it continues.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.tracking import queries, schema
from search_spaces import SearchSpace
from search_spaces.spec import ConstantSpec, IntSpec, LogIntSpec


@dataclass(frozen=True)
class EarlierTrial:
    """One earlier trial: its searched hyperparameters (typed) and its final metric value."""

    params: dict[str, Any]
    value: float
    run_id: str


@dataclass(frozen=True)
class WarmStart:
    """Earlier results for a new sweep's searcher.

    Attributes:
        trials: Every usable earlier trial, best first.
        top_k: How many of the best are evaluated again first.
        mode: ``"min"`` or ``"max"``.

    """

    trials: tuple[EarlierTrial, ...]
    top_k: int
    mode: str

    def points(self) -> list[dict[str, Any]]:
        """Return the ``top_k`` best distinct configurations, best first."""
        points: list[dict[str, Any]] = []
        for trial in self.trials:
            if len(points) >= self.top_k:
                break
            if trial.params not in points:
                points.append(trial.params)
        return points

    def seed(self, seed: int | None) -> int | None:
        """Return the searcher seed moved past the earlier trials (None stays unseeded)."""
        return None if seed is None else seed + len(self.trials)


def typed_params(space: SearchSpace, recorded: Mapping[str, str]) -> dict[str, Any] | None:
    """Turn a trial's recorded (string) params into typed values of ``space``'s searched ones.

    Returns:
        The searched parameters the trial had, or None when one no longer fits the space (the
        space changed since): such a point would only be rejected by the searcher.

    """
    typed: dict[str, Any] = {}
    for name, spec in space.params.items():
        if isinstance(spec, ConstantSpec) or name not in recorded:
            continue
        value = _coerce(spec, recorded[name])
        if value is None:
            return None
        typed[name] = value
    return typed or None


def _coerce(spec: Any, text: str) -> Any:
    values = getattr(spec, "values", None)
    if values is not None:
        matches = [v for v in values if str(v) == text]
        return matches[0] if matches else None
    try:
        number: float = int(float(text)) if isinstance(spec, IntSpec | LogIntSpec) else float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or not spec.low <= number <= spec.high:
        return None
    return number


def earlier_trials(
    tracking_uri: str,
    experiment_id: str,
    space: SearchSpace,
    metric: str,
    mode: str,
    sweep_run_ids: Iterable[str] | None = None,
) -> list[EarlierTrial]:
    """Read every trustworthy earlier trial of the experiment's sweeps, best first.

    Args:
        tracking_uri: The MLflow tracking store.
        experiment_id: The experiment holding the sweeps.
        space: The current search space (points that no longer fit it are dropped).
        metric: The metric to rank by (each trial's last reported value).
        mode: ``"min"`` or ``"max"``.
        sweep_run_ids: Only the trials of these sweeps (default: every sweep of the experiment).

    """
    if sweep_run_ids is None:
        sweep_run_ids = [run.run_id for run in queries.sweep_runs(tracking_uri, experiment_id)]
    found = []
    for sweep_id in sweep_run_ids:
        for child in queries.trial_runs(tracking_uri, experiment_id, sweep_id):
            if child.tags.get(schema.END_REASON) not in schema.TRUSTED_END_REASONS:
                continue
            value = child.metrics.get(metric)
            params = typed_params(space, child.params)
            if value is None or not math.isfinite(value) or params is None:
                continue
            found.append(EarlierTrial(params, float(value), child.run_id))
    found.sort(key=lambda t: t.value, reverse=(mode == "max"))
    return found


def seeded_optuna_storage(
    space_function: Callable[[Any], Any],
    mode: str,
    trials: Iterable[EarlierTrial],
    study_name: str,
) -> Any:
    """Return an in-memory Optuna storage whose study already holds ``trials`` as completed.

    Ray's ``OptunaSearch`` opens the study by name from this storage (``load_if_exists``), so
    its sampler models the earlier results from its first proposal on. Each trial is replayed
    through the same define-by-run space (parameters fixed to the recorded values), which gives
    Optuna the distributions Ray's ``add_evaluated_point`` cannot derive for define-by-run spaces.
    """
    import optuna

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction="maximize" if mode == "max" else "minimize",
        sampler=optuna.samplers.RandomSampler(seed=0),  # only fills what a point lacks
    )
    for trial in trials:
        study.enqueue_trial(trial.params, skip_if_exists=False)
        asked = study.ask()
        space_function(asked)
        study.tell(asked, trial.value)
    return storage
