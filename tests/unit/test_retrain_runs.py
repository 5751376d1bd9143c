"""A retrain leaves no run RUNNING: a signal closes its runs, a dead one's are closed next time.

Real MLflow (SQLite in tmp_path, copied from one empty store per module) and real signals sent
to this process. The re-tune itself is replaced by one that opens runs the way a sweep does (a
parent run carrying its driver, a trial under it) and then is stopped: a real re-tune needs Ray
and a minute, and the slow end-to-end test kills a real one (tests/e2e/test_retrain_cli.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from pipelines.retrain import run as retrain_run
from pipelines.retrain.lock import experiment_lock
from pipelines.retrain.run import RetrainInterrupted, run_retrain
from pipelines.tracking import champion, schema
from pipelines.tracking.client import experiment_id
from pipelines.tracking.orphans import this_driver
from tests.support.configs import shrunk

NAME = "digits_retrain"


def _dead_driver() -> str:
    """The identity of a real process that has exited (its pid and start time, now gone)."""
    code = (
        "import os, pathlib, socket\n"
        "stat = pathlib.Path(f'/proc/{os.getpid()}/stat').read_text()\n"
        "print(f\"{socket.gethostname()}:{os.getpid()}:{stat.rpartition(')')[2].split()[19]}\")"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _retune(client: MlflowClient, exp: str, driver: str) -> tuple[str, str]:
    """Open a re-tune's runs as a sweep does: the parent with its driver, one trial under it."""
    parent = client.create_run(
        exp,
        tags={
            schema.KIND: schema.KIND_SWEEP,
            schema.RETRAIN: "true",
            schema.RETRAIN_STAGE: "tuning",
            schema.DRIVER: driver,
        },
    ).info.run_id
    trial = client.create_run(
        exp, tags={schema.KIND: schema.KIND_TRIAL, schema.PARENT: parent}
    ).info.run_id
    return str(parent), str(trial)


def test_runs_of_a_dead_retrain_are_closed_by_the_next_one(uri: str) -> None:
    client = MlflowClient(uri)
    exp = experiment_id(uri, NAME)
    dead = _dead_driver()
    parent, trial = _retune(client, exp, dead)
    skip = client.create_run(
        exp, tags={schema.KIND: schema.KIND_RETRAIN, schema.DRIVER: dead}
    ).info.run_id
    live_parent, live_trial = _retune(client, exp, this_driver())

    assert sorted(champion.close_orphans(uri, exp)) == sorted([parent, skip])
    for run_id in (parent, trial, skip):
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert run.data.tags[schema.END_REASON] == schema.INTERRUPTED
        assert (
            "the next `tunepipe retrain` judges its challenger"
            in (run.data.tags[schema.END_DETAIL])
        )
    assert client.get_run(live_parent).info.status == "RUNNING"  # its driver is alive
    assert client.get_run(live_trial).info.status == "RUNNING"
    champion.abandon(uri, live_parent, "RUNNING")  # a later retrain gives up on it
    for run_id in (live_parent, live_trial):
        assert client.get_run(run_id).info.status == "KILLED"
    assert client.get_run(live_parent).data.tags[schema.RETRAIN_STAGE] == "abandoned"


def _send(signum: int) -> Callable[[], None]:
    def stop() -> None:
        os.kill(os.getpid(), signum)
        time.sleep(30)  # the handler raises in this thread long before this ends

    return stop


def _ray_sets_sigterm() -> None:
    # What ray.init does to the driver for the rest of its life (ray/_private/worker.py).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
    _send(signal.SIGTERM)()


@pytest.mark.parametrize(
    ("stop", "exit_code"),
    [(_send(signal.SIGTERM), 143), (_send(signal.SIGINT), 130), (_ray_sets_sigterm, 143)],
    ids=["sigterm", "sigint", "sigterm-after-ray-init"],
)
def test_a_stopped_retrain_closes_its_runs_as_killed(
    uri: str,
    monkeypatch: pytest.MonkeyPatch,
    stop: Callable[[], None],
    exit_code: int,
) -> None:
    opened: list[str] = []

    def retune(self: Any, prepared: Any, cache_hit: bool) -> tuple[str, str]:
        opened.extend(_retune(MlflowClient(uri), self.experiment_id, this_driver()))
        stop()
        raise AssertionError("the signal did not stop the retrain")

    monkeypatch.setattr(retrain_run._Retrain, "_tune", retune)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    config = shrunk("digits_retrain.yaml", **{"tracking.uri": uri})

    with pytest.raises(RetrainInterrupted) as stopped:
        run_retrain(config, progress=False)

    assert stopped.value.exit_code == exit_code
    assert stopped.value.run_id == opened[0]
    assert "the next `tunepipe retrain` judges its challenger" in str(stopped.value)
    client = MlflowClient(uri)
    for run_id in opened:
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert run.data.tags[schema.END_REASON] == schema.INTERRUPTED
        assert run.data.tags[schema.END_DETAIL].startswith("stopped by SIG")
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
    with experiment_lock(NAME):  # released
        pass


def test_a_retrain_that_fails_closes_its_runs_as_failed(
    uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []

    def retune(self: Any, prepared: Any, cache_hit: bool) -> tuple[str, str]:
        opened.extend(_retune(MlflowClient(uri), self.experiment_id, this_driver()))
        raise RuntimeError("the cluster went away")

    monkeypatch.setattr(retrain_run._Retrain, "_tune", retune)
    with pytest.raises(RuntimeError, match="the cluster went away"):
        run_retrain(shrunk("digits_retrain.yaml", **{"tracking.uri": uri}), progress=False)

    client = MlflowClient(uri)
    for run_id in opened:
        run = client.get_run(run_id)
        assert run.info.status == "FAILED"
        assert run.data.tags[schema.END_REASON] == "failed"
        assert "RuntimeError: the cluster went away" in run.data.tags[schema.END_DETAIL]


def test_a_process_stopping_closes_only_its_own_runs(uri: str) -> None:
    client = MlflowClient(uri)
    exp = experiment_id(uri, NAME)
    mine = _retune(client, exp, this_driver())
    other = _retune(client, exp, f"elsewhere:{os.getpid()}:1")
    closed = champion.close_own_runs(uri, exp, "KILLED", schema.INTERRUPTED, "stopped")
    assert closed == [mine[0]]
    assert {client.get_run(r).info.status for r in mine} == {"KILLED"}
    assert {client.get_run(r).info.status for r in other} == {"RUNNING"}
    assert socket.gethostname() != "elsewhere"
