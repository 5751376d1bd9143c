"""The sweep as an MLflow parent run: created after validation, closed with the best result."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from pipelines.tracking import schema
from pipelines.tracking.client import client_for, get_or_create_experiment
from pipelines.tracking.orphans import mark_orphaned_sweeps, this_driver

#: MLflow accepts at most 100 params per log_batch call.
PARAMS_PER_BATCH = 100


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys: ``{"a": {"b": 1}} -> {"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Log params in batches of at most 100, values as strings (MLflow's limit is 6000 chars)."""
    items = [Param(key, str(value)[:6000]) for key, value in params.items()]
    for start in range(0, len(items), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + PARAMS_PER_BATCH])


class SweepRun:
    """The parent run of one sweep."""

    def __init__(self, tracking_uri: str, experiment_name: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = client_for(tracking_uri)
        self.experiment_id = get_or_create_experiment(self.client, experiment_name, tracking_uri)
        self.run_id: str | None = None

    def start(
        self, config: Mapping[str, Any], search_space_file: Path, tags: Mapping[str, str]
    ) -> str:
        """Create the parent run and log the resolved config and the search space."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={schema.KIND: schema.KIND_SWEEP, **self._driver_tags(), **tags},
        )
        self.run_id = run.info.run_id
        log_params(self.client, self.run_id, flatten(config, "config."))
        with tempfile.TemporaryDirectory() as folder:
            resolved = Path(folder) / "config.yaml"
            resolved.write_text(yaml.safe_dump(dict(config), sort_keys=False))
            shutil.copy(search_space_file, Path(folder) / "search_space.yaml")
            self.client.log_artifacts(self.run_id, folder, artifact_path=schema.SWEEP_ARTIFACTS)
        return self.run_id

    def log_best(
        self,
        best_params: Mapping[str, Any],
        metric: str,
        value: float,
        extra_tags: Mapping[str, str],
        checkpoint_dir: Path | None,
    ) -> None:
        """Record the best trial's hyperparameters, metric and checkpoint on the parent run.

        The hyperparameters are tags ``best.<name>`` (plus ``tunepipe.best_config`` as JSON), not
        params: MLflow params are write-once, and an extended sweep can find a better trial.
        Each call logs ``best_<metric>`` at the next step, so its history is the best-so-far.
        """
        run_id = self._require_run()
        step = self.next_step(schema.best_metric(metric))
        best_tags = {f"{schema.BEST_PREFIX}{k}": str(v)[:5000] for k, v in best_params.items()}
        best_tags[schema.BEST_CONFIG] = json.dumps(dict(best_params), default=str)
        self.set_tags({**best_tags, **extra_tags})
        self.client.log_metric(run_id, schema.best_metric(metric), value, step=step)
        if checkpoint_dir is not None:
            self.client.log_artifacts(
                run_id, str(checkpoint_dir), artifact_path=schema.BEST_CHECKPOINT
            )

    def log_plots(self, folder: Path) -> None:
        """Attach the image files in ``folder`` to the parent run, under ``plots/``."""
        self.client.log_artifacts(self._require_run(), str(folder), artifact_path=schema.PLOTS)

    def resume(self, run_id: str) -> None:
        """Reopen an earlier sweep's parent run (``--extend``, ``--resume``): RUNNING again.

        This process becomes its driver, and an earlier interruption's end reason is cleared.
        """
        self.run_id = run_id
        self.client.update_run(run_id, status="RUNNING")
        self.set_tags(self._driver_tags())
        tags = self.client.get_run(run_id).data.tags
        for key in (schema.END_REASON, schema.END_DETAIL):
            if key in tags:
                self.client.delete_tag(run_id, key)

    def mark_orphans(self) -> list[str]:
        """Close the experiment's sweeps whose driver died (see :mod:`.orphans`)."""
        return mark_orphaned_sweeps(self.client, self.experiment_id)

    def interrupted(self, detail: str) -> None:
        """Close the parent run as KILLED: the sweep was stopped and can be resumed."""
        self.set_tags({schema.END_REASON: schema.INTERRUPTED, schema.END_DETAIL: detail})
        self.end("KILLED")

    @staticmethod
    def _driver_tags() -> dict[str, str]:
        return {schema.DRIVER: this_driver(), schema.HEARTBEAT: str(int(time.time()))}

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set tags on the parent run in one call."""
        run_id = self._require_run()
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def next_step(self, metric: str) -> int:
        """Return the step after the last one logged for ``metric`` on the parent run (0 first)."""
        history = self.client.get_metric_history(self._require_run(), metric)
        return max((m.step for m in history), default=-1) + 1

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log sweep-level metrics (counts, durations) on the parent run."""
        run_id = self._require_run()
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(run_id, metrics=batch)

    def end(self, status: str = "FINISHED") -> None:
        """Close the parent run with ``status`` (FINISHED, FAILED or KILLED)."""
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)

    def _require_run(self) -> str:
        if self.run_id is None:
            raise RuntimeError("the sweep's parent run has not been started")
        return self.run_id
