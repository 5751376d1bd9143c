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
   ``champion`` alias. Decision, both scores and the reason are tags and metrics of the run
   (:mod:`.judge`).

Every step leaves its stage on the run (``tunepipe.retrain_stage``), which makes a rerun after a
kill safe: a retrain that had registered its challenger resumes at the judging step (no second
version); one killed while tuning is marked abandoned and started afresh. ``champion`` only ever
moves after a completed evaluation, or when the champion can never score today's data; a
champion that could not be scored for any other reason stays, and the retrain fails (exit 1).

Nothing is left RUNNING: SIGINT or SIGTERM stops the retrain, which closes its runs (and its
re-tune's trials) as KILLED with end reason ``interrupted``; an error closes them as FAILED; the
runs of a retrain that was SIGKILLed are closed by the next ``tunepipe retrain`` or ``tunepipe
sweep`` of the experiment (:mod:`pipelines.tracking.orphans`).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.config import ExperimentConfig, load_config
from pipelines.data import Prepared, StreamFit, prepare_source
from pipelines.errors import ConfigError, DataError
from pipelines.paths import prepare_sqlite_store
from pipelines.retrain.judge import RetrainFailed, RetrainOutcome, judge
from pipelines.retrain.lock import EXIT_BUSY, RetrainBusy, experiment_lock
from pipelines.retrain.rules import retrain_config
from pipelines.sweep.plan import SweepPlan, plan_sweep
from pipelines.sweep.signals import StopRequest, SweepInterrupted, graceful_stop
from pipelines.tracking import champion, queries, schema
from pipelines.tracking.client import experiment_id
from pipelines.tracking.queries import ModelVersionRecord
from trainables.metrics import prediction_metric

__all__ = [
    "EXIT_BUSY",
    "RetrainBusy",
    "RetrainFailed",
    "RetrainInterrupted",
    "RetrainOutcome",
    "run_retrain",
]

logger = logging.getLogger(__name__)

#: What becomes of an interrupted retrain's work.
TAKEN_UP = (
    "the next `tunepipe retrain` judges its challenger if it registered one, else starts afresh"
)


class RetrainInterrupted(SweepInterrupted):
    """SIGINT or SIGTERM stopped the retrain; its runs were closed as KILLED.

    ``exit_code`` is the shell's for the signal (130, 143); the next retrain takes it up.
    """


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
        SweepFailed: When the re-tune produced nothing usable.
        RetrainFailed: A ``SweepFailed`` too: the champion could not be scored for a reason
            that may pass (it stays champion; the run records why).
        RetrainInterrupted: When SIGINT or SIGTERM stopped it (its runs are closed).

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
        retrain = _Retrain(plan, force, address, progress, on_stage or (lambda _: None))
        # SIGINT and SIGTERM stop it with an exception (at the trials' checkpoints while the
        # re-tune runs), so its runs are closed on the way out instead of left RUNNING.
        with graceful_stop() as stop:
            try:
                return retrain.run()
            except BaseException as exc:
                request = stop_request(exc, stop)
                closed = retrain.close_open_runs(exc, request)
                if request is None:
                    raise
                detail = f"stopped by {request.name}; {TAKEN_UP}"
                raise RetrainInterrupted(closed[0] if closed else "", request, detail) from None


def stop_request(error: BaseException, stop: StopRequest) -> StopRequest | None:
    """Return the signal that stopped the retrain, or None when ``error`` is not a signal's.

    Args:
        error: What ended the retrain.
        stop: What :func:`~pipelines.sweep.signals.graceful_stop` saw.

    """
    if isinstance(error, SweepInterrupted):  # the re-tune stopped at its checkpoints
        return StopRequest(signal.Signals[error.signal]) if error.signal else stop
    if isinstance(error, KeyboardInterrupt):
        return StopRequest(stop.signum or signal.SIGINT)
    if isinstance(error, SystemExit) and error.code == signal.SIGTERM:
        # ray.init sets SIGTERM to sys.exit(SIGTERM) for the rest of the process's life.
        return StopRequest(signal.SIGTERM)
    return None


def holdout_rows(prepared: Prepared | StreamFit) -> int:
    """Return how many rows today's data set aside for judging."""
    if isinstance(prepared, StreamFit):
        return prepared.num_holdout
    return 0 if prepared.y_holdout is None else len(prepared.y_holdout)


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
        prepare_sqlite_store(self.uri)  # a private (0600) database, before MLflow creates one
        self.experiment_id = experiment_id(self.uri, self.name)

    def run(self) -> RetrainOutcome:
        prepared, cache_hit = prepare_source(self.config.data)  # streamed data streams
        if holdout_rows(prepared) == 0:
            raise DataError(
                "the holdout split is empty",
                key="retrain.holdout_fraction",
                fix="raise it (or data.holdout_fraction) so some rows are set aside",
            )
        # Runs of a retrain or sweep whose driver was SIGKILLed are still RUNNING: close them.
        champion.close_orphans(self.uri, self.experiment_id)
        fingerprint = prepared.fingerprint()
        unfinished = self._unfinished(fingerprint)
        if unfinished is not None:
            run, version = unfinished
            champion.finish_resumed(self.uri, run.run_id, run.status)
            return self._judge(run.run_id, version, prepared, resumed=True)
        if not self.force:
            skipped = self._skip_if_unchanged(fingerprint)
            if skipped is not None:
                return skipped
        run_id, version = self._tune(prepared, cache_hit)
        return self._judge(run_id, version, prepared, resumed=False)

    def close_open_runs(self, error: BaseException, request: StopRequest | None) -> list[str]:
        """Close the runs this retrain left RUNNING as it stops; return the ones closed.

        Best effort: when MLflow cannot be reached, the next command closes them instead.
        """
        if request is not None:
            status, reason = "KILLED", schema.INTERRUPTED
            detail = f"stopped by {request.name}; {TAKEN_UP}"
        else:
            status, reason = "FAILED", "failed"
            detail = f"the retrain stopped with {type(error).__name__}: {error}"
        try:
            return champion.close_own_runs(self.uri, self.experiment_id, status, reason, detail)
        except Exception as exc:  # MLflow down: orphans.mark_orphaned_sweeps closes them later
            logger.warning("could not close the retrain's runs: %s", exc)
            return []

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

    def _tune(self, prepared: Prepared | StreamFit, cache_hit: bool) -> tuple[str, str]:
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
        # Strict: an outage raises here instead of passing for "no champion yet".
        return champion.current_champion(self.uri, self.name)

    def _judge(
        self, run_id: str, version: str, prepared: Prepared | StreamFit, *, resumed: bool
    ) -> RetrainOutcome:
        return judge(
            self.plan,
            prepared,
            run_id,
            version,
            experiment_id=self.experiment_id,
            resumed=resumed,
            on_stage=self.on_stage,
        )
