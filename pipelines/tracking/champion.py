"""What a retrain writes to MLflow: its stage, its decision, and the champion/challenger aliases.

Named operations for :mod:`pipelines.retrain`, which decides; this module only records (and
looks the champion up, strictly: an outage is never read as "no champion"). The order of writes
is part of the design: a run is marked ``decided`` in the same batch as its scores, and the
``champion`` alias moves before the decision is recorded, so a retrain killed in between is
judged again on its next run and never leaves a decision without its champion. A retrain that
stops closes the runs it drives; one that died is closed by the next (:mod:`.orphans`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException

from pipelines.tracking import orphans, schema
from pipelines.tracking.client import client_for
from pipelines.tracking.queries import ModelVersionRecord

#: MLflow's error codes for "no such registered model" and "no such alias": the only answers
#: that mean there is no champion. Any other error (a server that is down) is not an answer.
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


@dataclass(frozen=True)
class Decision:
    """A retrain's judgement of its challenger, as it is recorded.

    Attributes:
        model_name: The registered model (the experiment's name).
        challenger_version: The version this retrain registered.
        decision: ``promoted`` or ``kept``.
        reason: One sentence a person can read.
        metric: The metric both models were scored on.
        challenger_score: The challenger's holdout score.
        champion_score: The previous champion's holdout score (None without one).
        champion_before: The champion's version before the decision (None: there was none).
        champion_after: The champion's version after it (None: there is none).
        incompatible: Which input of the previous champion today's data lacks, when it was
            replaced without a score (``input_shape``, ``framework``...; "" otherwise).

    """

    model_name: str
    challenger_version: str
    decision: str
    reason: str
    metric: str
    challenger_score: float
    champion_score: float | None
    champion_before: str | None
    champion_after: str | None
    incompatible: str = ""


def set_alias(tracking_uri: str, model_name: str, alias: str, version: str) -> None:
    """Point ``alias`` of ``model_name`` at ``version`` (idempotent)."""
    client_for(tracking_uri).set_registered_model_alias(model_name, alias, version)


def set_stage(tracking_uri: str, run_id: str, stage: str) -> None:
    """Record how far the retrain of ``run_id`` got (:data:`~.schema.RETRAIN_STAGES`)."""
    client_for(tracking_uri).set_tag(run_id, schema.RETRAIN_STAGE, stage)


def current_champion(tracking_uri: str, model_name: str) -> ModelVersionRecord | None:
    """Return the version that holds ``champion``, or None when there is none.

    Unlike a lookup that reads every error as "none", only MLflow's "not found" means none: a
    tracking server that is down raises, so an outage is never taken for a missing champion.

    Raises:
        MlflowException: For any other error (MLflow or the network down).

    """
    try:
        version = client_for(tracking_uri).get_model_version_by_alias(model_name, schema.CHAMPION)
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            return None
        raise
    return ModelVersionRecord(
        model_name, str(version.version), str(version.run_id), dict(version.tags or {})
    )


def record_inputs(tracking_uri: str, run_id: str, inputs: str) -> None:
    """Record what the retrain's model was trained for (:data:`~.schema.MODEL_INPUTS`)."""
    client_for(tracking_uri).set_tag(run_id, schema.MODEL_INPUTS, inputs)


def abandon(tracking_uri: str, run_id: str, status: str) -> None:
    """Mark a retrain killed before it registered a model as abandoned, and close its runs."""
    client = client_for(tracking_uri)
    client.set_tag(run_id, schema.RETRAIN_STAGE, schema.STAGE_ABANDONED)
    if status == "RUNNING":
        detail = "abandoned: its retrain stopped while tuning; a later retrain started afresh"
        experiment = client.get_run(run_id).info.experiment_id
        orphans.close_with_trials(client, experiment, run_id, "KILLED", schema.INTERRUPTED, detail)


def finish_resumed(tracking_uri: str, run_id: str, status: str) -> None:
    """Reopen a retrain that stopped after registering, as FINISHED: it is judged now.

    Its earlier end (a kill marked ``interrupted``, a failed judgement) no longer stands.
    """
    if status == "FINISHED":
        return
    client = client_for(tracking_uri)
    client.set_terminated(run_id, status="FINISHED")
    tags = client.get_run(run_id).data.tags
    for key in (schema.END_REASON, schema.END_DETAIL):
        if key in tags:
            client.delete_tag(run_id, key)


def record_failure(tracking_uri: str, run_id: str, reason: str) -> None:
    """Record that the retrain could not judge (decision ``failed``), and close it FAILED.

    Its stage stays where it was, so the next retrain on the same data judges the same
    challenger again instead of registering another version.
    """
    client = client_for(tracking_uri)
    tags = {schema.RETRAIN_DECISION: schema.DECISION_FAILED, schema.RETRAIN_REASON: reason}
    client.log_batch(run_id, tags=[RunTag(k, v[:5000]) for k, v in tags.items()])
    client.set_terminated(run_id, status="FAILED")


def close_orphans(tracking_uri: str, experiment_id: str) -> list[str]:
    """Close the experiment's runs (retrains, sweeps and their trials) whose driver died."""
    return orphans.mark_orphaned_sweeps(client_for(tracking_uri), experiment_id)


def close_own_runs(
    tracking_uri: str, experiment_id: str, status: str, reason: str, detail: str
) -> list[str]:
    """Close the RUNNING runs this process drives, and their open trials (it is stopping).

    Args:
        tracking_uri: The tracking store.
        experiment_id: The experiment the retrain records into.
        status: ``KILLED`` (a signal) or ``FAILED`` (an error).
        reason: End reason tag: ``interrupted`` or ``failed``.
        detail: One sentence: why, and what continues the work.

    Returns:
        The parent run ids closed.

    """
    client = client_for(tracking_uri)
    driver = orphans.this_driver()
    return orphans.close_runs_of_driver(client, experiment_id, driver, status, reason, detail)


def record_skip(tracking_uri: str, experiment_id: str, fingerprint: str, reason: str) -> str:
    """Record a retrain that skipped (data unchanged) as a small finished run; return its id."""
    client = client_for(tracking_uri)
    run = client.create_run(
        experiment_id,
        run_name=f"retrain-skipped-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={
            schema.KIND: schema.KIND_RETRAIN,
            # Who writes it: should it die before closing the run, the next command does.
            schema.DRIVER: orphans.this_driver(),
            schema.DATA_FINGERPRINT: fingerprint,
            schema.RETRAIN_DECISION: "skipped",
            schema.RETRAIN_REASON: reason,
        },
    )
    client.set_terminated(run.info.run_id, status="FINISHED")
    return str(run.info.run_id)


def record_decision(tracking_uri: str, run_id: str, decision: Decision) -> None:
    """Move ``champion`` if promoted, then record the decision on the run and the version."""
    client = client_for(tracking_uri)
    name, version = decision.model_name, decision.challenger_version
    if decision.decision == "promoted":
        client.set_registered_model_alias(name, schema.CHAMPION, version)
    tags = {
        schema.RETRAIN_DECISION: decision.decision,
        schema.RETRAIN_REASON: decision.reason,
        schema.CHALLENGER_VERSION: version,
        schema.CHAMPION_BEFORE: decision.champion_before or "",
        schema.CHAMPION_AFTER: decision.champion_after or "",
        schema.RETRAIN_STAGE: schema.STAGE_DECIDED,
    }
    if decision.incompatible:
        tags[schema.CHAMPION_INCOMPATIBLE] = decision.incompatible
    now = int(time.time() * 1000)
    scores = [Metric(schema.holdout_metric(decision.metric), decision.challenger_score, now, 0)]
    if decision.champion_score is not None:
        scores.append(
            Metric(
                schema.champion_holdout_metric(decision.metric), decision.champion_score, now, 0
            )
        )
    # The decision tag goes in the same batch as the scores: a run is "decided" with them.
    client.log_batch(run_id, metrics=scores, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    client.set_model_version_tag(
        name, version, schema.holdout_metric(decision.metric), str(decision.challenger_score)
    )
    client.set_model_version_tag(name, version, schema.VERSION_DECISION, decision.decision)
