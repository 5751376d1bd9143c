"""``tunepipe sweep CONFIG --resume [SWEEP]``: continue a sweep whose driver stopped.

A sweep's identity is its MLflow parent run. The run records where its Tune experiment lives
(tag ``tunepipe.tune_experiment``: the storage URI and the experiment's name), so a resume needs
nothing but the run: it restores the experiment with ``Tuner.restore`` from the sweep's own
storage (finished trials are kept, unfinished and errored ones continue from their last
checkpoint), and the tracking callback comes back from Tune's snapshot with its map of trials to
child runs. The same parent and child runs are reopened; nothing is created twice.

If the driver died before Tune wrote its first snapshot (the first step of the loop, before any
trial started), there is nothing to restore: the sweep starts its trials again under the same
parent run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pipelines.config import ExperimentConfig
from pipelines.errors import ConfigError
from pipelines.sweep.checkpoint_repair import fill_missing_checkpoints, forget_missing_checkpoints
from pipelines.sweep.extend import check_same_data, find_sweep_to_extend
from pipelines.sweep.storage import filesystem
from pipelines.tracking import queries, schema
from pipelines.tracking.orphans import driver_is_alive

logger = logging.getLogger(__name__)

#: ``--resume`` given without a run id: the experiment's newest sweep.
LATEST = "latest"


class SweepAlreadyFinished(Exception):
    """The sweep to resume has finished: there is nothing to continue, and nothing changed."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"sweep {run_id} has already finished ({status}); nothing to resume")
        self.run_id = run_id
        self.status = status


@dataclass(frozen=True)
class SweepToResume:
    """An interrupted sweep, checked to be resumable by the given config.

    Attributes:
        run_id: Its parent run.
        experiment_uri: Its Tune experiment (storage URI joined with the experiment's name).
        restorable: Whether Tune wrote a snapshot to restore (else its trials start again).
        resumes: How often it was resumed before.
        trials: Child runs it already has.

    """

    run_id: str
    experiment_uri: str
    restorable: bool
    resumes: int
    trials: int


def find_sweep_to_resume(
    config: ExperimentConfig, run_id: str | None, fingerprint: str
) -> SweepToResume:
    """Find the sweep to resume (``run_id``, or the newest sweep) and check it can be.

    Raises:
        SweepAlreadyFinished: When the sweep has finished; nothing is changed.
        ConfigError: When there is no such sweep, it belongs to another experiment or metric,
            its data changed, it is still being driven, or its Tune experiment is gone.

    """
    uri = config.tracking.uri
    if run_id in (None, LATEST):
        run_id = _sweep_to_resume(uri, config.experiment_name)
    elif run_id.startswith("key:"):
        run_id = _sweep_to_resume(uri, config.experiment_name, key=run_id)
    sweep = find_sweep_to_extend(config, run_id, "--resume")  # the identity checks of --extend
    run = queries.get_run(uri, run_id)
    if run.status == "RUNNING":
        driver = run.tags.get(schema.DRIVER, "an unknown process")
        if driver_is_alive(driver, run.tags.get(schema.HEARTBEAT)):
            raise ConfigError(
                f"sweep {run_id} is still running (driver {driver})",
                key="--resume",
                fix="stop that driver first (SIGINT or SIGTERM stops it at a checkpoint)",
            )
    if run.status == "FINISHED":
        raise SweepAlreadyFinished(run_id, run.status)
    fix = "resume with the data the sweep started on, or start a new sweep"
    check_same_data(sweep, fingerprint, "--resume", fix)
    experiment_uri = run.tags.get(schema.TUNE_EXPERIMENT)
    if not experiment_uri:
        raise ConfigError(
            f"sweep {run_id} does not record where its Tune experiment is (an older tunepipe)",
            key="--resume",
            fix="start a new sweep, or extend this one with --extend",
        )
    return SweepToResume(
        run_id=run_id,
        experiment_uri=experiment_uri,
        restorable=has_snapshot(experiment_uri),
        resumes=int(run.tags.get(schema.RESUMES, "0")),
        trials=sweep.trials,
    )


def has_snapshot(experiment_uri: str) -> bool:
    """Return whether Tune saved the experiment's state there (its ``tuner.pkl`` and a snapshot).

    Raises:
        ConfigError: When the experiment's folder is gone from the storage.

    """
    import pyarrow.fs

    fs, path = filesystem(experiment_uri)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    names = {info.base_name for info in infos}
    if not names:
        return False
    return "tuner.pkl" in names and any(n.startswith("experiment_state-") for n in names)


def restore_tuner(experiment_uri: str, trainable: Any) -> Any:
    """Return Tune's Tuner for the interrupted experiment, with ``trainable`` re-attached.

    Unfinished trials and errored ones (a node lost beyond the retries) continue from their
    last checkpoint; finished ones are kept as they are. A checkpoint the snapshot names but
    Tune had already deleted is filled in first, and kept ones it had deleted are forgotten
    (:mod:`pipelines.sweep.checkpoint_repair`).
    """
    from ray import tune

    fill_missing_checkpoints(experiment_uri)
    forget_missing_checkpoints(experiment_uri)
    return tune.Tuner.restore(
        experiment_uri, trainable=trainable, resume_unfinished=True, resume_errored=True
    )


def restored_callback(tuner: Any, kind: type) -> Any:
    """Return the restored Tuner's callback of class ``kind`` (Tune restores callbacks itself).

    Ray cannot take new callbacks on restore (ray-project/ray#41364), so the tracking callback
    that comes back from ``tuner.pkl`` and the snapshot is the one the driver must read.
    """
    local = getattr(tuner, "_local_tuner", None)
    callbacks = local.get_run_config().callbacks if local is not None else None
    for callback in callbacks or []:
        if isinstance(callback, kind):
            return callback
    raise ConfigError(
        "the restored sweep has no tunepipe tracking callback",
        key="--resume",
        fix="resume from the machine that drives the cluster (not through ray:// Ray Client)",
    )


def _sweep_to_resume(uri: str, name: str, key: str | None = None) -> str:
    """Return the experiment's newest sweep, or the one whose spool key is ``key``."""
    experiment_id = queries.find_experiment(uri, name)
    query = schema.of_kind(schema.KIND_SWEEP)
    if key is not None:  # a sweep interrupted before MLflow took its run is named by its key
        query += f" and tags.`{schema.WRITE_KEY}` = '{key}'"
    found = []
    if experiment_id is not None:
        found = queries.search(uri, experiment_id, query, newest_first=True, max_results=1)
    if not found:
        raise ConfigError(
            f"experiment {name!r} has no sweep" + (f" with key {key}" if key else " to resume"),
            key="--resume",
            fix="check the key the interrupted sweep printed, and the tracking URI"
            if key
            else "start the sweep without --resume",
        )
    return found[0].run_id
