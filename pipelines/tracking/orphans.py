"""Sweeps whose driver died: found when tunepipe next looks at the experiment, and marked.

A driver that is SIGKILLed (or whose machine goes away) cannot close its MLflow runs: they would
stay RUNNING forever, and nobody could tell a live sweep from a dead one. Each driver therefore
writes who it is (:data:`~pipelines.tracking.schema.DRIVER`: host, pid and the process's start
time, so a reused pid is not mistaken for it) and a heartbeat. A RUNNING sweep is orphaned when
its driver's process is gone from this host, or, for a driver on another host, when its
heartbeat is older than :data:`STALE_AFTER_S`. Its parent run and open trial runs are then
closed as KILLED, with end reason ``interrupted`` and how to resume it. A retrain's runs are
found and closed the same way (by the next ``tunepipe retrain`` or ``tunepipe sweep``), and a
driver that is stopping closes its own runs with :func:`close_runs_of_driver`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

from pipelines.tracking import schema

logger = logging.getLogger(__name__)

#: A driver elsewhere writes a heartbeat every minute; this much silence means it is gone.
STALE_AFTER_S = 15 * 60


def this_driver() -> str:
    """Return this process's identity, as written to tag ``tunepipe.driver``."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def driver_is_alive(driver: str, heartbeat: str | None, now: float | None = None) -> bool:
    """Return whether the process named by ``driver`` may still be driving its sweep."""
    host, _, rest = driver.partition(":")
    pid_text, _, started = rest.partition(":")
    if host == socket.gethostname() and pid_text.isdigit():
        return _start_time(int(pid_text)) == started
    if heartbeat is None or not heartbeat.isdigit():
        return True  # another host and no heartbeat yet: cannot tell, so leave it alone
    return (now or time.time()) - int(heartbeat) < STALE_AFTER_S


def mark_orphaned_sweeps(client: MlflowClient, experiment_id: str) -> list[str]:
    """Close the RUNNING sweeps of ``experiment_id`` whose driver died, and their open trials.

    A retrain's runs (its re-tune's sweep run, or its skip record) are closed the same way,
    with an end detail that says the next ``tunepipe retrain`` takes them up.

    Returns:
        The parent run ids marked.

    """
    marked = []
    for run in _running_parents(client, experiment_id):
        driver = run.data.tags.get(schema.DRIVER)
        if driver is None or driver_is_alive(driver, run.data.tags.get(schema.HEARTBEAT)):
            continue
        run_id = run.info.run_id
        detail = _orphan_detail(run, driver)
        close_with_trials(client, experiment_id, run_id, "KILLED", schema.INTERRUPTED, detail)
        logger.warning("sweep %s was left running by a dead driver: marked interrupted", run_id)
        marked.append(run_id)
    return marked


def close_runs_of_driver(
    client: MlflowClient, experiment_id: str, driver: str, status: str, reason: str, detail: str
) -> list[str]:
    """Close the RUNNING sweep and retrain runs that ``driver`` drives, and their open trials.

    For a driver that is stopping (a signal, an error) and closes its own runs on the way out.

    Args:
        client: The MLflow client.
        experiment_id: The experiment to look in.
        driver: The driver's identity (:func:`this_driver`).
        status: ``KILLED`` or ``FAILED``.
        reason: The end reason tag (``interrupted``, ``failed``).
        detail: One sentence: why, and what continues the work.

    Returns:
        The parent run ids closed.

    """
    closed = []
    for run in _running_parents(client, experiment_id):
        if run.data.tags.get(schema.DRIVER) == driver:
            close_with_trials(client, experiment_id, run.info.run_id, status, reason, detail)
            closed.append(run.info.run_id)
    return closed


def close_with_trials(
    client: MlflowClient, experiment_id: str, run_id: str, status: str, reason: str, detail: str
) -> None:
    """Close run ``run_id`` and its RUNNING child runs with ``status`` and an end reason."""
    tags = [RunTag(schema.END_REASON, reason), RunTag(schema.END_DETAIL, detail[:5000])]
    trials = client.search_runs(
        [experiment_id],
        filter_string=f"{schema.children_of(run_id)} and attributes.status = 'RUNNING'",
    )
    for trial in trials:
        client.log_batch(trial.info.run_id, tags=tags)
        client.set_terminated(trial.info.run_id, status=status)
    client.log_batch(run_id, tags=tags)
    client.set_terminated(run_id, status=status)


def _running_parents(client: MlflowClient, experiment_id: str) -> list[Any]:
    """Return the experiment's RUNNING sweep and retrain runs (the runs a driver owns)."""
    runs: list[Any] = []
    for kind in (schema.KIND_SWEEP, schema.KIND_RETRAIN):  # MLflow filters have no IN for tags
        running = f"{schema.of_kind(kind)} and attributes.status = 'RUNNING'"
        runs.extend(client.search_runs([experiment_id], filter_string=running))
    return runs


def _orphan_detail(run: Any, driver: str) -> str:
    tags = run.data.tags
    if tags.get(schema.RETRAIN) == "true" or tags.get(schema.KIND) == schema.KIND_RETRAIN:
        return (
            f"the retrain's driver ({driver}) stopped without closing it; the next `tunepipe "
            "retrain` judges its challenger if it registered one, else starts afresh"
        )
    return (
        f"the driver ({driver}) stopped without closing the sweep; continue it with "
        f"`tunepipe sweep CONFIG --resume {run.info.run_id}`"
    )


def _start_time(pid: int) -> str:
    """Return when process ``pid`` started (clock ticks since boot), or "" if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Field 22, counted after the command name (which may hold spaces, inside parentheses).
    return stat.rpartition(")")[2].split()[19]
