"""``tunepipe retrain CONFIG``: warm-started re-tuning with champion/challenger promotion.

A retrain is meant to run unattended on a schedule, so it is built to be boring:

1. Input is checked first (exit 2), then one lock per experiment is taken: a second retrain of
   the same experiment exits at once with :data:`EXIT_BUSY` instead of queueing behind it.
2. Unchanged data (the content hash of the prepared splits equals the last judged retrain's)
   means nothing to learn: the run is recorded as ``skipped`` and the command exits 0.
3. A smaller re-tune (``retrain.num_samples``) starts warm: the ``retrain.top_k`` best earlier
   configurations are evaluated first and the searcher holds every earlier result
   (:mod:`pipelines.sweep.warm_start`).
4. Its best model is registered as a new version with alias ``challenger``, then it and the
   current ``champion`` are scored on the holdout split, rows no trial ever saw
   (``data.holdout_fraction``, a hash of each row's features so the split is stable as the data
   grows). Only a challenger that beats the champion by more than ``retrain.margin`` moves the
   ``champion`` alias. Decision, both scores and the reason are tags and metrics of the run.

Every step leaves its stage on the run (``tunepipe.retrain_stage``), which makes a rerun after a
kill safe: a retrain that had registered its challenger resumes at the judging step (no second
version); one killed while tuning is marked abandoned and started afresh. ``champion`` only ever
moves after a completed evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import ExperimentConfig, load_config
from pipelines.data import Prepared, prepare_arrays
from pipelines.errors import ConfigError, DataError
from pipelines.retrain.lock import EXIT_BUSY, RetrainBusy, experiment_lock
from pipelines.retrain.rules import decide, retrain_config
from pipelines.sweep.plan import SweepPlan, plan_sweep
from pipelines.tracking import champion, queries, schema
from pipelines.tracking.champion import Decision
from pipelines.tracking.client import experiment_id
from pipelines.tracking.queries import ModelVersionRecord
from trainables.metrics import prediction_metric

__all__ = ["EXIT_BUSY", "RetrainBusy", "RetrainOutcome", "run_retrain"]

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


def run_retrain(
    config: str | Path | ExperimentConfig,
    overrides: dict[str, Any] | None = None,
    *,
    force: bool = False,
    address: str | None = None,
    progress: bool = True,
    on_stage: Callable[[str], None] | None = None,
) -> RetrainOutcome:
    """Retrain an experiment: skip, or re-tune warm, judge on the holdout, maybe promote.

    Args:
        config: Path of an experiment YAML file, or an already loaded config.
        overrides: Dotted keys to replace, e.g. ``{"retrain.margin": 0.01}``.
        force: Retrain even when the data is unchanged.
        address: Ray cluster to use (else ``RAY_ADDRESS``, else a private local instance).
        progress: Show the re-tune's live progress view.
        on_stage: Called with each stage's name as it completes (``tuning``, ``registered``,
            ``evaluated``, ``decided``), e.g. for a progress line.

    Returns:
        The decision, both scores and the run that records them.

    Raises:
        UserInputError: For invalid input, before the lock, MLflow or Ray are touched.
        RetrainBusy: When another retrain of the experiment is running.

    """
    if not isinstance(config, ExperimentConfig):
        config = load_config(config, overrides)
    plan = plan_sweep(retrain_config(config))  # every input error first, and the only plan
    if plan.info.own_loop and prediction_metric(plan.config.metric, plan.extra_metrics) is None:
        raise ConfigError(
            f"a training function's model is judged on the holdout from its predictions, and "
            f"{plan.config.metric!r} cannot be computed from predictions",
            key="metric",
            fix="use val_accuracy, val_rmse, val_mae, a library metric or a module:function",
        )
    with experiment_lock(plan.config.experiment_name):
        return _Retrain(plan, force, address, progress, on_stage or (lambda _: None)).run()


class _Retrain:
    """One retrain's steps, sharing the plan, the prepared data and the model name."""

    def __init__(
        self,
        plan: SweepPlan,
        force: bool,
        address: str | None,
        progress: bool,
        on_stage: Callable[[str], None],
    ) -> None:
        self.plan, self.config = plan, plan.config
        self.force, self.address = force, address
        self.progress, self.on_stage = progress, on_stage
        self.name = self.config.experiment_name
        self.uri = self.config.tracking.uri
        self.experiment_id = experiment_id(self.uri, self.name)

    def run(self) -> RetrainOutcome:
        prepared, cache_hit = prepare_arrays(self.config.data)
        if prepared.y_holdout is None or len(prepared.y_holdout) == 0:
            raise DataError(
                "the holdout split is empty",
                key="retrain.holdout_fraction",
                fix="raise it (or data.holdout_fraction) so some rows are set aside",
            )
        fingerprint = prepared.fingerprint()
        unfinished = self._unfinished(fingerprint)
        if unfinished is not None:
            run, version = unfinished
            champion.close_if_running(self.uri, run.run_id, run.status)  # killed before it closed
            return self._judge(run.run_id, version, prepared, resumed=True)
        if not self.force:
            skipped = self._skip_if_unchanged(fingerprint)
            if skipped is not None:
                return skipped
        run_id, version = self._tune(prepared, cache_hit)
        return self._judge(run_id, version, prepared, resumed=False)

    def _unfinished(self, fingerprint: str) -> tuple[queries.RunRecord, str] | None:
        """Find a retrain killed after registering its challenger, on the same data.

        One killed earlier (while tuning) is marked abandoned: it has no model to judge.
        """
        for run in queries.retrain_runs(self.uri, self.experiment_id):
            stage = run.tags.get(schema.RETRAIN_STAGE)
            if stage in (schema.STAGE_DECIDED, schema.STAGE_ABANDONED, None):
                continue
            versions = queries.versions_logged_by(self.uri, run.run_id)
            if versions and run.tags.get(schema.DATA_FINGERPRINT) == fingerprint:
                logger.warning("resuming retrain run %s at its judging step", run.run_id)
                return run, str(max(int(v) for v in versions))
            champion.abandon(self.uri, run.run_id, run.status)
        return None

    def _skip_if_unchanged(self, fingerprint: str) -> RetrainOutcome | None:
        current = self._champion()
        if current is None:
            return None
        judged = [
            run
            for run in queries.retrain_runs(self.uri, self.experiment_id)
            if run.tags.get(schema.RETRAIN_STAGE) == schema.STAGE_DECIDED
        ]
        if not judged or judged[0].tags.get(schema.DATA_FINGERPRINT) != fingerprint:
            return None
        reason = (
            f"data unchanged (fingerprint {fingerprint}, as in retrain run {judged[0].run_id})"
        )
        run_id = champion.record_skip(self.uri, self.experiment_id, fingerprint, reason)
        return RetrainOutcome(
            decision="skipped",
            reason=reason,
            run_id=run_id,
            metric=self.config.metric,
            champion_version=current.version,
            experiment_id=self.experiment_id,
        )

    def _tune(self, prepared: Prepared, cache_hit: bool) -> tuple[str, str]:
        from pipelines.sweep.run import execute_sweep
        from pipelines.sweep.warm_start import WarmStart, earlier_trials

        config = self.config
        trials = earlier_trials(
            self.uri, self.experiment_id, self.plan.space, config.metric, config.mode
        )
        warm = WarmStart(tuple(trials), config.retrain.top_k, config.mode)
        summary = execute_sweep(
            self.plan,
            prepared,
            cache_hit=cache_hit,
            address=self.address,
            progress=self.progress,
            warm_start=warm,
            tags={schema.RETRAIN: "true", schema.RETRAIN_STAGE: "tuning"},
        )
        self.on_stage("tuning")
        if summary.model_version is None:
            raise RuntimeError("the re-tune kept no checkpoint of its best model to register")
        champion.set_stage(self.uri, summary.mlflow_parent_run_id, "registered")
        self.on_stage("registered")
        return summary.mlflow_parent_run_id, summary.model_version

    def _champion(self) -> ModelVersionRecord | None:
        return queries.model_version_by_alias(self.uri, self.name, schema.CHAMPION)

    def _score(self, run_id: str, prepared: Prepared) -> float:
        from pipelines.retrain.holdout import score_sweep_model

        assert prepared.x_holdout is not None and prepared.y_holdout is not None  # checked in run
        metrics = score_sweep_model(
            self.uri,
            run_id,
            self.plan,
            prepared.spec(),
            prepared.x_holdout,
            prepared.y_holdout,
        )
        return float(metrics[self.config.metric])

    def _judge(
        self, run_id: str, version: str, prepared: Prepared, *, resumed: bool
    ) -> RetrainOutcome:
        """Score challenger and champion on the holdout, decide, and record it all."""
        # Idempotent: a rerun after a kill between registering and aliasing completes it.
        champion.set_alias(self.uri, self.name, schema.CHALLENGER, version)
        challenger = self._score(run_id, prepared)
        current = self._champion()
        champion_score: float | None = None
        problem = ""
        if current is not None:
            try:
                champion_score = self._score(current.run_id, prepared)
            except Exception as exc:  # a champion that cannot read today's data is no rival
                problem = f"the champion (v{current.version}) cannot score this data: {exc}"
                logger.warning(problem)
        self.on_stage("evaluated")
        decision, reason = decide(
            challenger, champion_score, self.config.mode, self.config.retrain.margin, problem
        )
        before = current.version if current else None
        after = version if decision == "promoted" else before
        champion.record_decision(
            self.uri,
            run_id,
            Decision(
                model_name=self.name,
                challenger_version=version,
                decision=decision,
                reason=reason,
                metric=self.config.metric,
                challenger_score=challenger,
                champion_score=champion_score,
                champion_before=before,
                champion_after=after,
            ),
        )
        self.on_stage("decided")
        return RetrainOutcome(
            decision=decision,
            reason=reason,
            run_id=run_id,
            metric=self.config.metric,
            challenger_version=version,
            champion_version=after,
            challenger_score=challenger,
            champion_score=champion_score,
            resumed=resumed,
            experiment_id=self.experiment_id,
        )
