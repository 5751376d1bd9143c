"""A cluster of real ``ray start`` processes on this machine: a lost node, and a storage folder
that only one node has.

The head and each worker are ``ray start --block`` processes in sessions of their own, so
killing one's process group takes down exactly that node (its raylet and its workers), as a
machine that goes away would. A node-local storage path is made real, not mocked: the worker
runs in a mount namespace of its own (``unshare -m``, as root) with a tmpfs over the storage
folder, so it sees a different folder at the same path, as a node with its own disk does.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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
from tests.support.reconcile import reconcile, tunepipe

pytestmark = pytest.mark.slow  # a two-node cluster and a sweep across it: about 2 minutes

RAY = str(Path(sys.executable).parent / "ray")
#: Dead nodes are noticed in about 2 s instead of Ray's default 20-55 s.
FAST_HEALTH_CHECKS = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


@dataclass
class Cluster:
    """A head node started by the test; workers are added and killed by the tests."""

    address: str
    root: Path
    temp: Path
    env: dict[str, str]
    nodes: list[subprocess.Popen[Any]]

    def add_worker(self, name: str, own_folder: Path | None = None) -> subprocess.Popen[Any]:
        """Start a 1-CPU worker node; wait until the cluster counts it.

        ``own_folder``: the node gets a folder of its own at that path (a private tmpfs).
        """
        before = self.alive_nodes()
        command = [RAY, "start", f"--address={self.address}", "--num-cpus=1", "--block",
                   f"--temp-dir={self.temp / name}", "--disable-usage-stats",
                   f"--dashboard-agent-listen-port={free_port()}"]  # fmt: skip
        if own_folder is not None:
            mount = f"mount -t tmpfs tmpfs {own_folder} && exec {' '.join(command)}"
            command = ["unshare", "-m", "--propagation", "private", "sh", "-c", mount]
        node = _start(command, self.env, self.root / f"{name}.log")
        self.nodes.append(node)
        wait_until(lambda: self.alive_nodes() > before, 90, f"worker {name} to join", node)
        return node

    def alive_nodes(self) -> int:
        """Count the cluster's alive nodes (asked from a separate process: no Ray here)."""
        code = (
            "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False, "
            "logging_level='ERROR'); print('ALIVE', sum(n['Alive'] for n in ray.nodes()))"
        )
        out = subprocess.run([sys.executable, "-c", code, self.address], env=self.env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        counts = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("ALIVE ")]
        return int(counts[-1]) if counts else 0


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[Any]:
    with log.open("w") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _kill(node: subprocess.Popen[Any]) -> None:
    if node.poll() is None:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=60)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    # Ray's socket paths must stay under 108 bytes: its temp folders get short names.
    temp = Path(tempfile.mkdtemp(prefix="tp-", dir="/tmp"))
    port = free_port()
    env = driver_env(root / "home", **FAST_HEALTH_CHECKS)
    head = _start(
        [RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--block",
         f"--temp-dir={temp / 'head'}", "--include-dashboard=false", "--disable-usage-stats",
         f"--dashboard-agent-listen-port={free_port()}"],
        env,
        root / "head.log",
    )  # fmt: skip
    made = Cluster(f"127.0.0.1:{port}", root, temp, env, [head])
    try:
        wait_until(lambda: made.alive_nodes() == 1, 90, "the head node", head)
        yield made
    finally:
        for node in reversed(made.nodes):
            _kill(node)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_storage_folder_only_one_node_has_is_refused_before_any_trial(
    cluster: Cluster, tmp_path: Path
) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("needs root and unshare(1) to give a node a folder of its own: NOT RUN")
    storage = tmp_path / "storage"
    storage.mkdir()
    worker = cluster.add_worker("private-disk", own_folder=storage)
    try:
        home = tmp_path / "home"
        env = {**cluster.env, "TUNEPIPE_HOME": str(home)}
        refused = tunepipe(
            "sweep", str(CHAOS_CONFIG), "--address", cluster.address,
            "--set", f"storage.path={storage}", env=env, cwd=tmp_path, timeout=300,
        )  # fmt: skip
        assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-3000:]
        assert "is not shared" in refused.stderr and "Traceback" not in refused.stderr
        assert "storage.path" in refused.stderr and "Fix:" in refused.stderr
        assert not (home / "mlflow.db").exists() or reconcile_is_empty(home)
    finally:
        _kill(worker)
        cluster.nodes.remove(worker)
        wait_until(lambda: cluster.alive_nodes() == 1, 90, "the private worker to leave")


def reconcile_is_empty(home: Path) -> bool:
    """True when the store holds no sweep at all (nothing was recorded for a refused sweep)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    return all(not client.search_runs([e.experiment_id]) for e in client.search_experiments())


def test_trials_of_a_lost_node_resume_on_the_survivor_from_their_checkpoints(
    cluster: Cluster, tmp_path: Path
) -> None:
    worker = cluster.add_worker("doomed")
    home = tmp_path / "home"
    env = {**cluster.env, "TUNEPIPE_HOME": str(home)}
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    # Slower epochs than the suite's 0.6 s: the node must go while both first trials are
    # mid-way, and a poll of MLflow on a busy machine can take a second or two.
    driver = start_driver(
        str(CHAOS_CONFIG), "--address", cluster.address,
        "--set", f"storage.path={tmp_path / 'shared'}",
        "--set", "trainable.params.epoch_seconds=1.5",
        env=env, cwd=tmp_path, log=tmp_path / "driver.log",
    )  # fmt: skip
    # One trial on each node (1 CPU each), both mid-way (checkpointed, not finished): then the
    # worker goes. (Waiting for 2 epochs alone once let both finish first: the kill then hit
    # the third trial before its first checkpoint, which rightly started again from scratch.)
    wait_until(
        lambda: len([e for e in epochs_recorded(tracking, "chaos") if 2 <= e <= EPOCHS - 2]) >= 2,
        timeout=240,
        what="two trials mid-way, with 2 to 4 epochs recorded",
        proc=driver,
    )
    _kill(worker)
    cluster.nodes.remove(worker)
    assert driver.wait(timeout=400) == 0, (tmp_path / "driver.log").read_text()[-4000:]

    ledger = reconcile(tracking, "chaos", EPOCHS)
    print("after losing a node:", ledger.summary())
    assert ledger.retries >= 1, "no trial was on the lost node"
    assert ledger.parents == 1 and ledger.children == TRIALS == ledger.tune_trials
    assert ledger.lost_trials == [] and ledger.tune_unfinished == 0
    assert ledger.duplicated_points == 0 and ledger.missing_points == 0
    assert ledger.left_running == 0 and ledger.missing_checkpoints == 0
    assert ledger.model_versions == 1
    from ray.tune import ExperimentAnalysis

    moved = [t for t in ExperimentAnalysis(str(tmp_path / "shared" / _only(tmp_path / "shared")))
             .trials if t.run_metadata.num_failures]  # fmt: skip
    under_way = [t for t in moved if len(_nodes_reported(t)) > 1]  # reported on both nodes
    assert under_way, "the node went before any trial on it had reported: nothing to resume"
    for trial in under_way:  # resumed from a checkpoint: fewer epochs since the restore
        assert trial.last_result["iterations_since_restore"] < EPOCHS, trial.last_result


def _nodes_reported(trial: Any) -> set[str]:
    """The nodes a Tune trial reported results from (its result.json, one line a report)."""
    import json

    lines = (Path(trial.path) / "result.json").read_text().splitlines()
    return {json.loads(line)["node_id"] for line in lines if line.strip()}


def _only(folder: Path) -> str:
    (name,) = [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return name
