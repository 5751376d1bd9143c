"""``tunepipe retrain CONFIG``: warm-started re-tuning with champion/challenger promotion.

A retrain is meant to run unattended on a schedule, so it is built to be boring:

1. Input is checked first (exit 2), then one lock per experiment is taken: a second retrain of
   the same experiment exits at once with :data:`EXIT_BUSY` instead of queueing behind it.
2. Unchanged data (the content hash of the prepared splits equals the last judged retrain's)
   means nothing to learn: the run is recorded as ``skipped`` and the command exits 0.
3. A smaller re-tune (``retrain.num_samples``) starts warm: the ``retrain.top_k`` best earlier
   configurations are evaluated first and the searcher holds every earlier result
   (:mod:`pipelines.warm_start`).
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
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import ExperimentConfig, load_config
from pipelines.data import Prepared, prepare_arrays
from pipelines.errors import DataError
from pipelines.paths import tunepipe_home
from pipelines.tracking.models import CHALLENGER
from pipelines.tracking.sweep_run import get_or_create_experiment
from pipelines.validate import plan_sweep
from pipelines.warm_start import WarmStart, earlier_trials

logger = logging.getLogger(__name__)

CHAMPION = "champion"
#: Exit code when another retrain of the experiment holds the lock (sysexits' EX_TEMPFAIL).
EXIT_BUSY = 75
STAGE_TAG = "tunepipe.retrain_stage"
RETRAIN_TAG = "tunepipe.retrain"


class RetrainBusy(RuntimeError):
    """Another retrain of the same experiment is running; try again later."""


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


def retrain_config(config: ExperimentConfig) -> ExperimentConfig:
    """Return the re-tune's config: ``retrain.num_samples`` trials, a holdout set aside."""
    data = config.data
    if data.holdout_fraction == 0:
        data = data.model_copy(update={"holdout_fraction": config.retrain.holdout_fraction})
    search = config.search.model_copy(update={"num_samples": config.retrain.num_samples})
    tracking = config.tracking.model_copy(update={"register_model": True})
    return config.model_copy(update={"data": data, "search": search, "tracking": tracking})


def decide(
    challenger: float, champion: float | None, mode: str, margin: float, champion_problem: str = ""
) -> tuple[str, str]:
    """Return ``(decision, reason)`` for a challenger's and the champion's holdout scores.

    Only a challenger that beats the champion by more than ``margin`` is promoted, or any
    finite one when there is no champion that can be scored.
    """
    if not math.isfinite(challenger):
        return "kept", f"the challenger's holdout score is {challenger}"
    if champion is None:
        return "promoted", champion_problem or "there was no champion yet"
    gain = challenger - champion if mode == "max" else champion - challenger
    if gain > margin:
        return "promoted", f"it beats the champion by {gain:.4g} (margin {margin:g})"
    return "kept", (
        f"the challenger's improvement {gain:.4g} is not above the margin {margin:g} "
        f"({challenger:.4f} vs the champion's {champion:.4f})"
    )


@contextmanager
def experiment_lock(experiment: str) -> Iterator[Path]:
    """Hold the experiment's retrain lock, or raise :class:`RetrainBusy` at once.

    An OS file lock under ``$TUNEPIPE_HOME/locks``: the kernel releases it when the process
    dies, so a killed retrain never leaves a stale lock behind. It serialises retrains that
    share the state folder; a schedule across machines adds its own (Kubernetes'
    ``concurrencyPolicy: Forbid``, see infra/README.md).
    """
    from filelock import FileLock, Timeout

    path = tunepipe_home() / "locks" / f"retrain-{experiment}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RetrainBusy(
            f"another retrain of {experiment!r} is running (it holds {path}); this one did "
            "nothing. Try again when it has finished."
        ) from None
    try:
        yield path
    finally:
        lock.release()


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
    config = retrain_config(config)
    plan_sweep(config)  # every input error first
    with experiment_lock(config.experiment_name):
        return _Retrain(config, force, address, progress, on_stage or (lambda _: None)).run()


class _Retrain:
    """One retrain's steps, sharing the MLflow client, the data and the model name."""

    def __init__(
        self,
        config: ExperimentConfig,
        force: bool,
        address: str | None,
        progress: bool,
        on_stage: Callable[[str], None],
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.config, self.force, self.address = config, force, address
        self.progress, self.on_stage = progress, on_stage
        self.name = config.experiment_name
        self.client = MlflowClient(config.tracking.uri)
        self.experiment_id = get_or_create_experiment(self.client, self.name, config.tracking.uri)

    def run(self) -> RetrainOutcome:
        prepared, _ = prepare_arrays(self.config.data)
        if prepared.y_holdout is None or len(prepared.y_holdout) == 0:
            raise DataError(
                "the holdout split is empty",
                key="retrain.holdout_fraction",
                fix="raise it (or data.holdout_fraction) so some rows are set aside",
            )
        fingerprint = prepared.fingerprint()
        unfinished = self._unfinished(fingerprint)
        if unfinished is not None:
            run_id, version = unfinished
            if self.client.get_run(run_id).info.status == "RUNNING":  # killed before it closed
                self.client.set_terminated(run_id, status="FINISHED")
            return self._judge(run_id, version, prepared, resumed=True)
        if not self.force:
            skipped = self._skip_if_unchanged(fingerprint)
            if skipped is not None:
                return skipped
        run_id, version = self._tune()
        return self._judge(run_id, version, prepared, resumed=False)

    def _retrain_runs(self) -> list[Any]:
        return list(
            self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{RETRAIN_TAG}` = 'true'",
                order_by=["attributes.start_time DESC"],
                max_results=100,
            )
        )

    def _unfinished(self, fingerprint: str) -> tuple[str, str] | None:
        """Find a retrain killed after registering its challenger, on the same data.

        One killed earlier (while tuning) is marked abandoned: it has no model to judge.
        """
        for run in self._retrain_runs():
            stage = run.data.tags.get(STAGE_TAG)
            if stage in ("decided", "abandoned", None):
                continue
            versions = self.client.search_model_versions(f"run_id = '{run.info.run_id}'")
            same_data = run.data.tags.get("tunepipe.data_fingerprint") == fingerprint
            if versions and same_data:
                version = str(max(int(v.version) for v in versions))
                logger.warning("resuming retrain run %s at its judging step", run.info.run_id)
                return run.info.run_id, version
            self.client.set_tag(run.info.run_id, STAGE_TAG, "abandoned")
            if run.info.status == "RUNNING":
                self.client.set_terminated(run.info.run_id, status="KILLED")
        return None

    def _skip_if_unchanged(self, fingerprint: str) -> RetrainOutcome | None:
        if self._champion() is None:
            return None
        judged = [r for r in self._retrain_runs() if r.data.tags.get(STAGE_TAG) == "decided"]
        if not judged or judged[0].data.tags.get("tunepipe.data_fingerprint") != fingerprint:
            return None
        reason = (
            f"data unchanged (fingerprint {fingerprint}, as in retrain run "
            f"{judged[0].info.run_id})"
        )
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"retrain-skipped-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={
                "tunepipe.kind": "retrain",
                "tunepipe.data_fingerprint": fingerprint,
                "tunepipe.retrain_decision": "skipped",
                "tunepipe.retrain_reason": reason,
            },
        )
        self.client.set_terminated(run.info.run_id, status="FINISHED")
        champion = self._champion()
        return RetrainOutcome(
            decision="skipped",
            reason=reason,
            run_id=run.info.run_id,
            metric=self.config.metric,
            champion_version=str(champion.version) if champion else None,
            experiment_id=self.experiment_id,
        )

    def _tune(self) -> tuple[str, str]:
        from pipelines.tuning import run_sweep

        space = plan_sweep(self.config).space
        trials = earlier_trials(
            self.client, self.experiment_id, space, self.config.metric, self.config.mode
        )
        warm = WarmStart(tuple(trials), self.config.retrain.top_k, self.config.mode)
        summary = run_sweep(
            self.config,
            address=self.address,
            progress=self.progress,
            warm_start=warm,
            tags={RETRAIN_TAG: "true", STAGE_TAG: "tuning"},
        )
        self.on_stage("tuning")
        if summary.model_version is None:
            raise RuntimeError("the re-tune kept no checkpoint of its best model to register")
        self.client.set_tag(summary.mlflow_parent_run_id, STAGE_TAG, "registered")
        self.on_stage("registered")
        return summary.mlflow_parent_run_id, summary.model_version

    def _champion(self) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.name, CHAMPION)
        except MlflowException:  # no registered model, or no champion alias yet
            return None

    def _score(self, run_id: str, prepared: Prepared) -> float:
        from pipelines.holdout import score_sweep_model

        assert prepared.x_holdout is not None and prepared.y_holdout is not None
        metrics = score_sweep_model(
            self.client,
            run_id,
            self.config.trainable.framework,
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
        self.client.set_registered_model_alias(self.name, CHALLENGER, version)
        challenger = self._score(run_id, prepared)
        champion = self._champion()
        champion_score: float | None = None
        problem = ""
        if champion is not None:
            try:
                champion_score = self._score(champion.run_id, prepared)
            except Exception as exc:  # a champion that cannot read today's data is no rival
                problem = f"the champion (v{champion.version}) cannot score this data: {exc}"
                logger.warning(problem)
        self.on_stage("evaluated")
        decision, reason = decide(
            challenger, champion_score, self.config.mode, self.config.retrain.margin, problem
        )
        metric = self.config.metric
        if decision == "promoted":
            self.client.set_registered_model_alias(self.name, CHAMPION, version)
        after = (
            version if decision == "promoted" else (str(champion.version) if champion else None)
        )
        tags = {
            "tunepipe.retrain_decision": decision,
            "tunepipe.retrain_reason": reason,
            "tunepipe.challenger_version": version,
            "tunepipe.champion_before": str(champion.version) if champion else "",
            "tunepipe.champion_after": after or "",
            STAGE_TAG: "decided",
        }
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        scores = [Metric(f"holdout_{metric}", challenger, now, 0)]
        if champion_score is not None:
            scores.append(Metric(f"champion_holdout_{metric}", champion_score, now, 0))
        # The decision tag goes last in the same batch: a run is "decided" with its scores.
        self.client.log_batch(
            run_id, metrics=scores, tags=[RunTag(k, str(v)) for k, v in tags.items()]
        )
        self.client.set_model_version_tag(self.name, version, f"holdout_{metric}", challenger)
        self.client.set_model_version_tag(self.name, version, "retrain_decision", decision)
        self.on_stage("decided")
        return RetrainOutcome(
            decision=decision,
            reason=reason,
            run_id=run_id,
            metric=metric,
            challenger_version=version,
            champion_version=after,
            challenger_score=challenger,
            champion_score=champion_score,
            resumed=resumed,
            experiment_id=self.experiment_id,
        )
