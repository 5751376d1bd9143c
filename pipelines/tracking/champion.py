"""What a retrain writes to MLflow: its stage, its decision, and the champion/challenger aliases.

Named operations for :mod:`pipelines.retrain.run`, which decides; this module only records. The
order of writes is part of the design: a run is marked ``decided`` in the same batch as its
scores, and the ``champion`` alias moves before the decision is recorded, so a retrain killed in
between is judged again on its next run and never leaves a decision without its champion.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mlflow.entities import Metric, RunTag

from pipelines.tracking import schema
from pipelines.tracking.client import client_for


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


def set_alias(tracking_uri: str, model_name: str, alias: str, version: str) -> None:
    """Point ``alias`` of ``model_name`` at ``version`` (idempotent)."""
    client_for(tracking_uri).set_registered_model_alias(model_name, alias, version)


def set_stage(tracking_uri: str, run_id: str, stage: str) -> None:
    """Record how far the retrain of ``run_id`` got (:data:`~.schema.RETRAIN_STAGES`)."""
    client_for(tracking_uri).set_tag(run_id, schema.RETRAIN_STAGE, stage)


def abandon(tracking_uri: str, run_id: str, status: str) -> None:
    """Mark a retrain killed before it registered a model as abandoned, and close its run."""
    client = client_for(tracking_uri)
    client.set_tag(run_id, schema.RETRAIN_STAGE, schema.STAGE_ABANDONED)
    if status == "RUNNING":
        client.set_terminated(run_id, status="KILLED")


def close_if_running(tracking_uri: str, run_id: str, status: str) -> None:
    """Close a run a killed process left RUNNING (its work is finished by whoever resumes it)."""
    if status == "RUNNING":
        client_for(tracking_uri).set_terminated(run_id, status="FINISHED")


def record_skip(tracking_uri: str, experiment_id: str, fingerprint: str, reason: str) -> str:
    """Record a retrain that skipped (data unchanged) as a small finished run; return its id."""
    client = client_for(tracking_uri)
    run = client.create_run(
        experiment_id,
        run_name=f"retrain-skipped-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={
            schema.KIND: schema.KIND_RETRAIN,
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
