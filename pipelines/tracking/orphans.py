"""Sweeps whose driver died: found when tunepipe next looks at the experiment, and marked.

A driver that is SIGKILLed (or whose machine goes away) cannot close its MLflow runs: they would
stay RUNNING forever, and nobody could tell a live sweep from a dead one. Each driver therefore
writes who it is (:data:`~pipelines.tracking.schema.DRIVER`: host, pid and the process's start
time, so a reused pid is not mistaken for it) and a heartbeat. A RUNNING sweep is orphaned when
its driver's process is gone from this host, or, for a driver on another host, when its
heartbeat is older than :data:`STALE_AFTER_S`. Its parent run and open trial runs are then
closed as KILLED, with end reason ``interrupted`` and how to resume it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

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

    Returns:
        The parent run ids marked.

    """
    running = client.search_runs(
        [experiment_id],
        filter_string=f"{schema.of_kind(schema.KIND_SWEEP)} and attributes.status = 'RUNNING'",
    )
    marked = []
    for run in running:
        driver = run.data.tags.get(schema.DRIVER)
        if driver is None or driver_is_alive(driver, run.data.tags.get(schema.HEARTBEAT)):
            continue
        run_id = run.info.run_id
        detail = (
            f"the driver ({driver}) stopped without closing the sweep; continue it with "
            f"`tunepipe sweep CONFIG --resume {run_id}`"
        )
        tags = [RunTag(schema.END_REASON, schema.INTERRUPTED), RunTag(schema.END_DETAIL, detail)]
        trials = client.search_runs(
            [experiment_id],
            filter_string=f"{schema.children_of(run_id)} and attributes.status = 'RUNNING'",
        )
        for trial in trials:
            client.log_batch(trial.info.run_id, tags=tags)
            client.set_terminated(trial.info.run_id, status="KILLED")
        client.log_batch(run_id, tags=tags)
        client.set_terminated(run_id, status="KILLED")
        logger.warning("sweep %s was left running by a dead driver: marked interrupted", run_id)
        marked.append(run_id)
    return marked


def _start_time(pid: int) -> str:
    """Return when process ``pid`` started (clock ticks since boot), or "" if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Field 22, counted after the command name (which may hold spaces, inside parentheses).
    return stat.rpartition(")")[2].split()[19]
