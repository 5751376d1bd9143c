"""The sweep as an MLflow parent run: created after validation, closed with the best result.

Every write goes through the sweep's spool (:mod:`pipelines.tracking.spool`): the driver never
waits for MLflow and loses nothing while it is down. Reads (orphans, history) are best effort.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from mlflow.tracking import MlflowClient

from pipelines.tracking import schema
from pipelines.tracking.client import client_for
from pipelines.tracking.orphans import mark_orphaned_sweeps, this_driver
from pipelines.tracking.spool import Spool, experiment_ref, grace_seconds, run_key

logger = logging.getLogger(__name__)


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


def param_value(value: Any) -> str:
    """Return ``value`` as MLflow stores a param: a string of at most 6000 characters."""
    return str(value)[:6000]


class SweepRun:
    """The parent run of one sweep, written through a spool.

    Args:
        tracking_uri: The MLflow store.
        experiment_name: The experiment holding the sweep (created by the first write).
        spool: The journal of this driver's writes (a new one by default).

    """

    def __init__(
        self, tracking_uri: str, experiment_name: str, spool: Spool | None = None
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.spool = spool if spool is not None else Spool(tracking_uri).start()
        #: The run in the spool's references: ``key:...`` (new) or ``id:...`` (resumed).
        self.ref: str | None = None
        self._experiment_id: str | None = None
        self._fresh = False
        self._next_steps: dict[str, int] = {}
        self._unreachable = False

    @property
    def client(self) -> MlflowClient:
        """An MLflow client for reads (writes go through the spool)."""
        return client_for(self.tracking_uri)

    @property
    def run_id(self) -> str | None:
        """The parent run's MLflow id (None until MLflow has taken the run)."""
        return self.spool.resolve(self.ref) if self.ref else None

    @property
    def experiment_id(self) -> str:
        """The experiment's MLflow id ("" while MLflow is unreachable)."""
        if self._experiment_id is None:
            self._experiment_id = self.spool.resolve(experiment_ref(self.experiment_name))
        if self._experiment_id is None:
            try:
                experiment = self.client.get_experiment_by_name(self.experiment_name)
            except Exception:  # MLflow down: the id is not needed to run the sweep
                return ""
            if experiment is None:
                return ""
            self._experiment_id = str(experiment.experiment_id)
        return self._experiment_id

    def start(
        self, config: Mapping[str, Any], search_space_file: Path, tags: Mapping[str, str]
    ) -> str:
        """Create the parent run and log the resolved config and the search space.

        Returns:
            The run's reference (its id is known once MLflow has taken it: :attr:`run_id`).

        """
        self.ref = key = run_key()
        self._fresh = True
        self.spool.append(
            {
                "op": "create_run",
                "key": key,
                "experiment": self.experiment_name,
                "name": f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
                "time": _now_ms(),
                "tags": {
                    schema.KIND: schema.KIND_SWEEP,
                    schema.WRITE_KEY: key,
                    **self._driver_tags(),
                    **tags,
                },
            }
        )
        params = {k: param_value(v) for k, v in flatten(config, "config.").items()}
        self.spool.append({"op": "log_batch", "run": key, "params": params})
        with tempfile.TemporaryDirectory(prefix="tunepipe-config-") as folder:
            resolved = Path(folder) / "config.yaml"
            resolved.write_text(yaml.safe_dump(dict(config), sort_keys=False))
            shutil.copy(search_space_file, Path(folder) / "search_space.yaml")
            self.log_artifacts(Path(folder), schema.SWEEP_ARTIFACTS)
        return key

    def log_best(
        self,
        best_params: Mapping[str, Any],
        metric: str,
        value: float,
        extra_tags: Mapping[str, str],
        checkpoint_dir: Path | None,
        run_tags: Mapping[str, str] | None = None,
    ) -> None:
        """Record the best trial's hyperparameters, metric and checkpoint on the parent run.

        The hyperparameters are tags ``best.<name>`` (plus ``tunepipe.best_config`` as JSON), not
        params: MLflow params are write-once, and an extended sweep can find a better trial.
        Each call logs ``best_<metric>`` at the next step, so its history is the best-so-far.
        ``run_tags`` are tags whose values are run references (the best trial's child run).
        """
        best_tags = {f"{schema.BEST_PREFIX}{k}": str(v)[:5000] for k, v in best_params.items()}
        best_tags[schema.BEST_CONFIG] = json.dumps(dict(best_params), default=str)
        self.set_tags({**best_tags, **extra_tags}, run_tags)
        name = schema.best_metric(metric)
        self.log_metrics({name: value}, step=self.next_step(name))
        if checkpoint_dir is not None:
            self.log_artifacts(checkpoint_dir, schema.BEST_CHECKPOINT)

    def register_model(self, folder: Path, model_name: str, framework: str) -> str:
        """Log the MLflow model in ``folder`` on the parent run and register a new version.

        The version gets the alias ``challenger`` and a tag naming its framework; registering
        again (a replay) finds the run's version instead of making another.

        Returns:
            The version's reference: :meth:`resolve` gives its number once MLflow has it.

        """
        run = self._require_run()
        self.log_artifacts(folder, schema.MODEL)
        version = run_key()
        self.spool.append(
            {
                "op": "register",
                "key": version,
                "run": run,
                "path": schema.MODEL,
                "name": model_name,
                "tags": {schema.VERSION_FRAMEWORK: framework},
                "alias": schema.CHALLENGER,
            }
        )
        self.set_tags({}, {schema.MODEL_VERSION: version})
        return version

    def resolve(self, ref: str) -> str | None:
        """Return what a reference of this sweep's spool names, once MLflow has taken it."""
        return self.spool.resolve(ref)

    def log_plots(self, folder: Path) -> None:
        """Attach the image files in ``folder`` to the parent run, under ``plots/``."""
        self.log_artifacts(folder, schema.PLOTS)

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        """Log the files of ``folder`` under ``artifact_path`` (a copy waits in the spool)."""
        staged = self.spool.stage(folder)
        self.spool.append(
            {
                "op": "artifacts",
                "run": self._require_run(),
                "folder": staged,
                "path": artifact_path,
            }
        )

    def resume(self, run_id: str) -> str:
        """Reopen an earlier sweep's parent run (``--extend``, ``--resume``): RUNNING again.

        This process becomes its driver, and an earlier interruption's end reason is cleared.

        Returns:
            The run's reference in the spool.

        """
        self.ref = f"id:{run_id}"
        self.spool.append({"op": "status", "run": self.ref, "status": "RUNNING"})
        self.set_tags(self._driver_tags())
        for key in (schema.END_REASON, schema.END_DETAIL):
            self.spool.append({"op": "delete_tag", "run": self.ref, "tag": key})
        return self.ref

    def mark_orphans(self) -> list[str]:
        """Close the experiment's sweeps whose driver died (see :mod:`.orphans`).

        Best effort: with MLflow down, the sweep starts anyway and the next command does it.
        """
        try:
            experiment_id = self.experiment_id
            return mark_orphaned_sweeps(self.client, experiment_id) if experiment_id else []
        except Exception as exc:  # MLflow down: nothing to mark that cannot wait
            logger.warning("could not look for sweeps left running (MLflow: %s)", exc)
            return []

    def interrupted(self, detail: str) -> None:
        """Close the parent run as KILLED: the sweep was stopped and can be resumed."""
        self.set_tags({schema.END_REASON: schema.INTERRUPTED, schema.END_DETAIL: detail})
        self.end("KILLED")

    @staticmethod
    def _driver_tags() -> dict[str, str]:
        return {schema.DRIVER: this_driver(), schema.HEARTBEAT: str(int(time.time()))}

    def set_tags(self, tags: Mapping[str, str], run_tags: Mapping[str, str] | None = None) -> None:
        """Set tags on the parent run in one write (``run_tags``: values are references)."""
        op: dict[str, Any] = {"op": "log_batch", "run": self._require_run()}
        op["tags"] = {k: str(v) for k, v in tags.items()}
        if run_tags:
            op["ref_tags"] = dict(run_tags)
        self.spool.append(op)

    def next_step(self, metric: str) -> int:
        """Return the step after the last one logged for ``metric`` on the parent run (0 first).

        A new sweep counts its own steps; an extended one reads where the earlier run stopped.
        """
        if metric not in self._next_steps:
            self._next_steps[metric] = 0 if self._fresh else self._logged_steps(metric)
        step = self._next_steps[metric]
        self._next_steps[metric] = step + 1
        return step

    def _logged_steps(self, metric: str) -> int:
        self.sync()  # what this driver has spooled for the run first
        try:
            history = self.client.get_metric_history(self.run_id or "", metric)
        except Exception as exc:  # MLflow down: the history continues from 0
            logger.warning("could not read the history of %s (MLflow: %s)", metric, exc)
            return 0
        return max((m.step for m in history), default=-1) + 1

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log sweep-level metrics (counts, durations) on the parent run."""
        now = _now_ms()
        batch = [[k, float(v), now, step] for k, v in metrics.items()]
        self.spool.append({"op": "log_batch", "run": self._require_run(), "metrics": batch})

    def sync(self) -> bool:
        """Wait (at most the grace period) until MLflow has every write; return whether it has.

        Once MLflow was found unreachable, later waits are short: the sweep is not held up
        twice by the same outage.
        """
        timeout = 2.0 if self._unreachable else grace_seconds()
        done = self.spool.wait(timeout)
        self._unreachable = not done
        return done

    def end(self, status: str = "FINISHED") -> None:
        """Close the parent run with ``status`` (FINISHED, FAILED or KILLED)."""
        if self.ref is not None:
            self.spool.append(
                {"op": "status", "run": self.ref, "status": status, "time": _now_ms()}
            )

    def close(self) -> int:
        """Stop the spool's writer; return the writes still waiting (MLflow unreachable)."""
        return self.spool.close(2.0 if self._unreachable else None)

    def _require_run(self) -> str:
        if self.ref is None:
            raise RuntimeError("the sweep's parent run has not been started")
        return self.ref


def _now_ms() -> int:
    return int(time.time() * 1000)
