"""A sweep whose driver died is marked when tunepipe next looks; a live one is left alone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from pipelines.tracking import schema
from pipelines.tracking.orphans import (
    STALE_AFTER_S,
    driver_is_alive,
    mark_orphaned_sweeps,
    this_driver,
)


def _dead_driver() -> str:
    """The identity of a real process that has exited (its pid and start time, now gone)."""
    code = "from pipelines.tracking.orphans import this_driver; print(this_driver())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_a_driver_is_alive_while_its_process_runs_and_dead_after() -> None:
    assert driver_is_alive(this_driver(), None)
    dead = _dead_driver()
    assert dead.startswith(socket.gethostname() + ":")
    assert not driver_is_alive(dead, None)
    # The pid of this process with another start time is a reused pid, not the driver.
    assert not driver_is_alive(f"{socket.gethostname()}:{os.getpid()}:1", None)


def test_a_driver_on_another_host_is_judged_by_its_heartbeat() -> None:
    now = time.time()
    assert driver_is_alive("elsewhere:12:34", str(int(now - 60)), now)
    assert not driver_is_alive("elsewhere:12:34", str(int(now - STALE_AFTER_S - 1)), now)
    assert driver_is_alive("elsewhere:12:34", None, now)  # cannot tell: leave it alone


def test_runs_of_a_dead_driver_are_closed_as_interrupted_with_how_to_resume(
    tmp_path: Path,
) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("orphans", artifact_location=(tmp_path / "a").as_uri())

    def sweep(driver: str) -> tuple[str, str, str]:
        parent = client.create_run(
            exp, tags={schema.KIND: schema.KIND_SWEEP, schema.DRIVER: driver}
        ).info.run_id
        tags = {schema.KIND: schema.KIND_TRIAL, schema.PARENT: parent}
        running = client.create_run(exp, tags=tags).info.run_id
        done = client.create_run(exp, tags=tags).info.run_id
        client.set_terminated(done, "FINISHED")
        return parent, running, done

    dead_parent, dead_trial, dead_done = sweep(_dead_driver())
    live_parent, live_trial, _ = sweep(this_driver())

    assert mark_orphaned_sweeps(client, exp) == [dead_parent]
    for run_id in (dead_parent, dead_trial):
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert run.data.tags[schema.END_REASON] == schema.INTERRUPTED
        assert f"--resume {dead_parent}" in run.data.tags[schema.END_DETAIL]
    assert client.get_run(dead_done).info.status == "FINISHED"  # its end stands
    assert client.get_run(live_parent).info.status == "RUNNING"
    assert client.get_run(live_trial).info.status == "RUNNING"
    assert mark_orphaned_sweeps(client, exp) == []  # once
