"""The MLflow tracking server goes away during a sweep; nothing the sweep recorded is lost.

Real processes, a real outage: ``tunepipe sweep`` runs in a session of its own against a real
``mlflow server`` on a fixed port of 127.0.0.1, over a SQLite store, serving artifacts itself
(tests/support/outage.py). The outage is that server stopped (SIGTERM to its process group,
workers included) and, later, started again on the same port over the same store. The driver
keeps MLflow's writes in its spool on disk (``$TUNEPIPE_HOME/spool/``) while the server is
down; what it holds reaches MLflow when the server is back: before the driver exits, through
``tunepipe sync``, or through ``tunepipe sweep --resume`` after the driver died. Each test ends
by reconciling Tune's state, MLflow's runs and histories, the checkpoints in the storage and
the registry (tests/support/reconcile.py): lost 0, duplicated 0, left RUNNING 0, and by an
empty spool.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.support.chaos import (
    CHAOS_CONFIG,
    EPOCHS,
    TRIALS,
    driver_env,
    epochs_recorded,
    free_port,
    start_driver,
    wait_until,
)
from tests.support.outage import MlflowServer, log_of, spooled, spooled_bytes
from tests.support.reconcile import Ledger, reconcile, tunepipe

pytestmark = pytest.mark.slow  # each test is a sweep of real processes and a server: 1-1.5 min

#: What the driver prints when it exits with writes MLflow has not taken yet ("N writes wait in
#: the spool ..."); the notice of an outage mid-sweep says "writes wait in the spool", no count.
STILL_SPOOLED = re.compile(r"\d+ writes wait in the spool")
#: Seconds a driver waits at the end for MLflow, where the server stays down to the end.
SHORT_GRACE = {"TUNEPIPE_MLFLOW_GRACE_S": "5"}


#: A line a Ray worker printed, forwarded to the driver's output with its tag. Ray's workers
#: can print "Exception ignored ... SystemExit" tracebacks when Tune stops their actors; those
#: are Ray's, and a trial's real failure shows in the reconcile instead.
WORKER_LINE = re.compile(r"^(\x1b\[\d+m)?\(\w+ pid=\d+")


def _driver_lines(output: str) -> str:
    return "\n".join(line for line in output.splitlines() if not WORKER_LINE.match(line))


def _assert_clean_exit(output: str, home: Path, writes_left: bool = False) -> None:
    """No traceback of tunepipe's; the spool holds writes exactly when the command said so."""
    assert "Traceback" not in _driver_lines(output), output[-3000:]
    assert bool(STILL_SPOOLED.search(output)) == writes_left, output[-3000:]
    assert bool(spooled(home)) == writes_left, f"spool {spooled(home)} vs output {output[-2000:]}"


def _options(server: MlflowServer, epoch_seconds: float | None = None) -> list[str]:
    """Return the ``--set`` options of every ``tunepipe sweep`` of a test."""
    options = ["--set", f"tracking.uri={server.url}"]
    if epoch_seconds is not None:
        options += ["--set", f"trainable.params.epoch_seconds={epoch_seconds}"]
    return options


def _run_ids(tracking_uri: str) -> tuple[str, set[str]]:
    """Return the sweep's parent run id and its child run ids that MLflow holds now."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("chaos")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r.info.run_id for r in runs if r.data.tags.get("tunepipe.kind") == "sweep"]
    children = {r.info.run_id for r in runs if r.data.tags.get("tunepipe.kind") == "trial"}
    return parent, children


def _wait_for_an_epoch(server: MlflowServer, driver: Any) -> None:
    wait_until(
        lambda: max(epochs_recorded(server.url, "chaos"), default=0) >= 1,
        timeout=120,
        what="a trial to record an epoch",
        proc=driver,
    )


def _figures(fault: str, ledger: Ledger, started: float) -> None:
    seconds = time.monotonic() - started
    print(f"\nfigures | {fault} | {ledger.summary()} | {seconds:.0f} s", flush=True)


@dataclass
class Outage:
    """One test's server, the sweep's driver, and what the driver was given."""

    server: MlflowServer
    driver: Any
    home: Path
    env: dict[str, str]
    log: Path
    options: list[str]


@contextlib.contextmanager
def _sweep(
    tmp_path: Path, *, epoch_seconds: float | None = None, grace: bool = False, up: bool = True
) -> Iterator[Outage]:
    """Start a server (``up``: and wait for the sweep's first epoch in it) and the driver."""
    home = tmp_path / "home"
    env = driver_env(home, **(SHORT_GRACE if grace else {}))
    log = tmp_path / "1"
    with MlflowServer(tmp_path / "server", free_port()) as server:
        if up:
            server.start()
        options = _options(server, epoch_seconds)
        driver = start_driver(str(CHAOS_CONFIG), *options, env=env, cwd=tmp_path, log=log)
        if up:
            _wait_for_an_epoch(server, driver)
        yield Outage(server, driver, home, env, log, options)


def test_mlflow_down_when_the_driver_starts(tmp_path: Path) -> None:
    started = time.monotonic()
    with _sweep(tmp_path, up=False) as run:
        time.sleep(10)  # the sweep starts and records without a server
        assert run.driver.poll() is None, "the sweep ended before MLflow came: " + _tail(run)
        run.server.start()
        assert run.driver.wait(timeout=180) == 0, _tail(run)
        _assert_clean_exit(run.log.read_text(), run.home)
        ledger = reconcile(run.server.url, "chaos", EPOCHS)
    _figures("MLflow down for the first 10 s of the sweep", ledger, started)
    ledger.assert_whole(TRIALS)


def test_a_30_second_blip_mid_sweep(tmp_path: Path) -> None:
    started = time.monotonic()
    with _sweep(tmp_path, epoch_seconds=2.5) as run:  # 2 rounds of 6 epochs: about 60 s
        run.server.stop()
        down = time.monotonic()
        time.sleep(30)
        assert run.driver.poll() is None, "the sweep ended during the blip: " + _tail(run)
        run.server.start()
        back = time.monotonic()
        assert run.driver.wait(timeout=180) == 0, _tail(run)
        _assert_clean_exit(run.log.read_text(), run.home)
        ledger = reconcile(run.server.url, "chaos", EPOCHS)
    _figures(f"MLflow down {back - down:.0f} s mid-sweep", ledger, started)
    ledger.assert_whole(TRIALS)


def test_mlflow_down_to_the_end_then_tunepipe_sync(tmp_path: Path) -> None:
    started = time.monotonic()
    with _sweep(tmp_path, epoch_seconds=1, grace=True) as run:
        assert run.driver.poll() is None, "the sweep ended before the outage"
        run.server.stop()
        assert run.driver.wait(timeout=180) == 0, _tail(run)
        _assert_clean_exit(run.log.read_text(), run.home, writes_left=True)

        run.server.start()
        synced = tunepipe("sync", "--tracking-uri", run.server.url, env=run.env, cwd=tmp_path)
        (tmp_path / "2").write_text(log_of(synced))  # kept for a failure's story
        assert synced.returncode == 0, log_of(synced)[-3000:]
        _assert_clean_exit(log_of(synced), run.home)
        ledger = reconcile(run.server.url, "chaos", EPOCHS)
    _figures("MLflow down from mid-sweep to the end, then tunepipe sync", ledger, started)
    ledger.assert_whole(TRIALS)


def test_a_sigkilled_driver_during_the_outage_resumes_into_the_same_runs(tmp_path: Path) -> None:
    started = time.monotonic()
    with _sweep(tmp_path, epoch_seconds=1.5, grace=True) as run:
        parent, children = _run_ids(run.server.url)
        run.server.stop()
        before = spooled_bytes(run.home)
        wait_until(
            lambda: spooled_bytes(run.home) > before,
            timeout=60,
            what="the driver to spool results while MLflow is down",
            proc=run.driver,
        )
        os.killpg(run.driver.pid, signal.SIGKILL)  # the driver and its Ray, as a lost machine
        run.driver.wait(timeout=60)
        assert spooled(run.home), "the killed driver's spool is gone"
        assert "Traceback" not in _driver_lines(run.log.read_text()), _tail(run)

        run.server.start()
        resumed = tunepipe("sweep", str(CHAOS_CONFIG), *run.options, "--resume", env=run.env,
                           cwd=tmp_path)  # fmt: skip
        (tmp_path / "2").write_text(log_of(resumed))  # kept for a failure's story
        assert resumed.returncode == 0, log_of(resumed)[-3000:]
        _assert_clean_exit(log_of(resumed), run.home)
        ledger = reconcile(run.server.url, "chaos", EPOCHS)
        after_parent, after_children = _run_ids(run.server.url)
        tags = MlflowClient(run.server.url).get_run(parent).data.tags
    _figures("driver SIGKILLed while MLflow was down, then --resume", ledger, started)
    ledger.assert_whole(TRIALS)
    assert after_parent == parent, "the resumed sweep recorded into a new parent run"
    assert children <= after_children, "child runs recorded before the outage were replaced"
    assert tags.get("tunepipe.resumes") == "1"


def _tail(run: Outage) -> str:
    return run.log.read_text()[-3000:]
