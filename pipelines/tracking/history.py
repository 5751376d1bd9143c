"""A finished (or running) sweep as MLflow recorded it: the parent run and every trial's history.

Plots and ``tunepipe report`` read sweeps from here rather than from Ray Tune's result files:
MLflow holds every reported epoch even after a trial was restored or exploited by PBT (Tune
rewrites its own files then), and it is all there is for a sweep that ran on another machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.tracking import queries, schema

#: Metrics whose per-epoch history is read for every trial.
HISTORY_METRICS = ("train_loss", "val_loss", "lr")


@dataclass(frozen=True)
class TrialHistory:
    """One trial (child run).

    Attributes:
        run_id: MLflow run id.
        name: Run name, e.g. ``trial-003 lr=0.01 optimizer=adam``.
        params: Hyperparameters as MLflow stores them (strings).
        end_reason: ``completed``, ``stopped_early``, ``diverged``, ``failed`` or ``running``.
        metrics: Metric name to ``[(epoch, value), ...]`` sorted by epoch.

    """

    run_id: str
    name: str
    params: dict[str, str]
    end_reason: str
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def final(self, metric: str) -> float | None:
        """Return the metric's value at the last recorded epoch, or None if never recorded."""
        history = self.metrics.get(metric)
        return history[-1][1] if history else None


@dataclass(frozen=True)
class SweepHistory:
    """A sweep's parent run and its trials.

    Attributes:
        parent_run_id: MLflow run id of the sweep.
        name: The sweep's name (its MLflow experiment).
        metric: The sweep's metric.
        mode: ``"min"`` or ``"max"``.
        searched: Names of the searched hyperparameters.
        trials: Every child run, in trial-name order.

    """

    parent_run_id: str
    name: str
    metric: str
    mode: str
    searched: tuple[str, ...]
    trials: tuple[TrialHistory, ...]

    def best(self, trial: TrialHistory) -> float | None:
        """Return the trial's best value of the sweep metric (None when it has none)."""
        values = [v for _, v in trial.metrics.get(self.metric, [])]
        if not values or trial.end_reason in ("diverged", "failed"):
            return None
        return max(values) if self.mode == "max" else min(values)

    def ranked(self) -> list[TrialHistory]:
        """Return the trials with a best value, best first (diverged and failed ones left out)."""
        scored = [(self.best(t), t) for t in self.trials]
        kept = [(v, t) for v, t in scored if v is not None]
        kept.sort(key=lambda pair: pair[0], reverse=(self.mode == "max"))
        return [t for _, t in kept]


def load_sweep_history(tracking_uri: str, parent_run_id: str) -> SweepHistory:
    """Read a sweep's parent run and the full metric history of each of its trials.

    Args:
        tracking_uri: The MLflow tracking store.
        parent_run_id: The sweep's run id.

    Raises:
        RunNotFound: If the store has no such run.

    """
    parent = queries.get_run(tracking_uri, parent_run_id)
    metric = parent.tags.get(schema.METRIC, "")
    names = dict.fromkeys((metric, *HISTORY_METRICS))
    trials = []
    for child in queries.trial_runs(tracking_uri, parent.experiment_id, parent_run_id):
        metrics = {}
        for name in names:
            points = queries.metric_history(tracking_uri, child.run_id, name)
            if points:
                metrics[name] = points
        trials.append(
            TrialHistory(
                run_id=child.run_id,
                name=child.name,
                params=dict(child.params),
                end_reason=child.tags.get(schema.END_REASON, "running"),
                metrics=metrics,
            )
        )
    trials.sort(key=lambda t: t.name)
    searched = tuple(name for name in parent.tags.get(schema.SEARCHED, "").split(",") if name)
    return SweepHistory(
        parent_run_id=parent_run_id,
        name=queries.experiment_name(tracking_uri, parent.experiment_id),
        metric=metric,
        mode=parent.tags.get(schema.MODE, "max"),
        searched=searched,
        trials=tuple(trials),
    )


def best_params(tracking_uri: str, parent_run_id: str) -> dict[str, str]:
    """Return the best trial's hyperparameters as the sweep recorded them (``best.*`` tags)."""
    tags = queries.get_run(tracking_uri, parent_run_id).tags
    prefix = schema.BEST_PREFIX
    return {key[len(prefix) :]: value for key, value in tags.items() if key.startswith(prefix)}
