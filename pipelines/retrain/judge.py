"""Judging a registered challenger against the champion on the holdout, and recording it.

The champion only ever moves after both models were scored, or when the champion can never
score today's data (:mod:`.compat`): then it is no rival, and the recorded reason says which of
its inputs changed. A champion that could not be scored for any other reason (MLflow or the
network down, an artifact that could not be read) stays: the retrain fails with
:class:`RetrainFailed`, its run records why, and the next retrain judges the same challenger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pipelines.data import Prepared, StreamFit
from pipelines.data.stream_sweep import holdout_batches as streamed_holdout
from pipelines.retrain.compat import (
    IncompatibleModel,
    ModelInputs,
    check_framework,
    incompatibility,
    inputs_of,
)
from pipelines.retrain.holdout import (
    HoldoutBatches,
    downloaded_checkpoint,
    holdout_batches,
    score_checkpoint,
    score_sweep_model,
)
from pipelines.retrain.rules import decide
from pipelines.sweep.finish import SweepFailed
from pipelines.sweep.plan import SweepPlan
from pipelines.tracking import champion, queries, schema
from pipelines.tracking.champion import Decision
from pipelines.tracking.queries import ModelVersionRecord
from trainables.registry import TRAINABLES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainOutcome:
    """What a retrain decided and why.

    Attributes:
        decision: ``promoted``, ``kept`` or ``skipped``.
        reason: One sentence a person can read in a log.
        run_id: The MLflow run holding the record (the re-tune's sweep run, or the skip record).
        metric: The metric both models were judged on.
        challenger_version: Version registered by this retrain (None when skipped).
        champion_version: The champion after the decision (None if there is none).
        challenger_score: The challenger's holdout score.
        champion_score: The previous champion's holdout score (None without one).
        resumed: Whether an interrupted retrain was finished instead of starting a new one.
        experiment_id: The MLflow experiment (for UI links).

    """

    decision: str
    reason: str
    run_id: str
    metric: str
    challenger_version: str | None = None
    champion_version: str | None = None
    challenger_score: float | None = None
    champion_score: float | None = None
    resumed: bool = False
    experiment_id: str = ""


class RetrainFailed(SweepFailed):
    """The champion could not be judged for a reason that may pass; it stays champion.

    A :class:`~pipelines.sweep.finish.SweepFailed`: ``tunepipe retrain`` prints it in one line
    and exits 1 ("failed; the next firing tries again").
    """


def judge(
    plan: SweepPlan,
    prepared: Prepared | StreamFit,
    run_id: str,
    version: str,
    *,
    experiment_id: str,
    resumed: bool = False,
    on_stage: Callable[[str], None] = lambda _: None,
) -> RetrainOutcome:
    """Score challenger ``version`` (of run ``run_id``) and the champion, decide, record it.

    Args:
        plan: The retrain's plan (its config names the tracking store and the model).
        prepared: Today's data, with its holdout split.
        run_id: The retrain's run, which logged the challenger.
        version: The challenger's registered version.
        experiment_id: The MLflow experiment (for the outcome's UI link).
        resumed: Whether this finishes an interrupted retrain.
        on_stage: Called with ``evaluated`` and ``decided`` as they complete.

    Returns:
        The decision, both scores and the run that records them.

    Raises:
        RetrainFailed: When the champion could not be scored for a reason that may pass.

    """
    config = plan.config
    uri, name = config.tracking.uri, config.experiment_name
    # Idempotent: a rerun after a kill between registering and aliasing completes it.
    champion.set_alias(uri, name, schema.CHALLENGER, version)
    champion.record_inputs(uri, run_id, inputs_of(plan, prepared.spec()).to_json())
    challenger = _score(uri, run_id, plan, prepared)
    current, champion_score, incompatible = _rival(plan, prepared, run_id)
    on_stage("evaluated")
    problem = ""
    if current is not None and incompatible is not None:
        problem = f"the champion (v{current.version}) cannot score today's data: {incompatible}"
        logger.warning(problem)
    decision, reason = decide(
        challenger, champion_score, config.mode, config.retrain.margin, problem
    )
    before = current.version if current else None
    after = version if decision == "promoted" else before
    record = Decision(
        model_name=name,
        challenger_version=version,
        decision=decision,
        reason=reason,
        metric=config.metric,
        challenger_score=challenger,
        champion_score=champion_score,
        champion_before=before,
        champion_after=after,
        incompatible=incompatible.what if incompatible is not None else "",
    )
    champion.record_decision(uri, run_id, record)
    on_stage("decided")
    return RetrainOutcome(
        decision=decision,
        reason=reason,
        run_id=run_id,
        metric=config.metric,
        challenger_version=version,
        champion_version=after,
        challenger_score=challenger,
        champion_score=champion_score,
        resumed=resumed,
        experiment_id=experiment_id,
    )


def score_champion(plan: SweepPlan, prepared: Prepared | StreamFit, champion_run_id: str) -> float:
    """Return the champion's holdout score on today's data.

    Args:
        plan: Today's plan (its trainable reads the champion's checkpoint).
        prepared: Today's data, with its holdout split.
        champion_run_id: The run that logged the champion.

    Returns:
        The score in the plan's metric.

    Raises:
        IncompatibleModel: When the champion can never score this data (:mod:`.compat`).
        Exception: Anything else (MLflow or the network down, an unreadable artifact): it
            may pass, and says nothing about the champion.

    """
    uri, spec = plan.config.tracking.uri, prepared.spec()
    holdout = holdout_of(prepared)
    run = queries.get_run(uri, champion_run_id)
    framework = run.tags.get(schema.FRAMEWORK)
    check_framework(framework, plan.info.framework, _installed(framework))
    recorded = ModelInputs.from_json(run.tags.get(schema.MODEL_INPUTS))
    with downloaded_checkpoint(uri, champion_run_id) as local:
        try:
            metrics = score_checkpoint(local, plan, spec, holdout)
        except Exception as exc:  # local only: a mismatch, or something that may pass
            incompatible = incompatibility(exc, recorded, inputs_of(plan, spec))
            if incompatible is None:
                raise
            raise incompatible from exc
    return float(metrics[plan.config.metric])


def _rival(
    plan: SweepPlan, prepared: Prepared | StreamFit, run_id: str
) -> tuple[ModelVersionRecord | None, float | None, IncompatibleModel | None]:
    """Return the champion, its score and why it cannot score (or fail the retrain)."""
    uri, name = plan.config.tracking.uri, plan.config.experiment_name
    try:
        current = champion.current_champion(uri, name)
    except Exception as exc:  # MLflow did not answer: a champion may well exist
        raise _failed(uri, run_id, "the champion could not be looked up", exc) from exc
    if current is None:
        return None, None, None
    try:
        return current, score_champion(plan, prepared, current.run_id), None
    except IncompatibleModel as exc:
        return current, None, exc
    except Exception as exc:  # not known to repeat: never a reason to replace the champion
        what = f"the champion (v{current.version}) could not be scored"
        raise _failed(uri, run_id, what, exc) from exc


def _failed(uri: str, run_id: str, what: str, error: Exception) -> RetrainFailed:
    """Record on the run why the retrain could not judge, and return the error to raise."""
    reason = (
        f"{what} ({_one_line(error)}); it stays champion, and the next retrain judges this "
        "challenger again"
    )
    try:
        champion.record_failure(uri, run_id, reason)
    except Exception as record_error:  # most likely the same outage: say so, fail all the same
        logger.warning("could not record the failure on run %s: %s", run_id, record_error)
        reason += " (not recorded in MLflow, which could not be reached)"
    return RetrainFailed(reason)


def _score(uri: str, run_id: str, plan: SweepPlan, prepared: Prepared | StreamFit) -> float:
    metrics = score_sweep_model(uri, run_id, plan, prepared.spec(), holdout_of(prepared))
    return float(metrics[plan.config.metric])


def holdout_of(prepared: Prepared | StreamFit) -> HoldoutBatches:
    """Return today's holdout split as batches: from memory, or streamed a fragment at a time."""
    if isinstance(prepared, StreamFit):
        fit = prepared
        return lambda: streamed_holdout(fit)
    x, y = prepared.x_holdout, prepared.y_holdout
    if x is None or y is None:
        raise ValueError("the retrain's data has no holdout split")  # run_retrain checks first
    return lambda: holdout_batches(x, y)


def _installed(framework: str | None) -> bool:
    info = TRAINABLES.get(framework or "")
    return info is None or not info.missing_modules()


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}".rstrip(": ")
