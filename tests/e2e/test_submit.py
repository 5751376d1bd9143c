"""``tunepipe submit`` and ``tunepipe jobs`` against a real Ray head with its job server.

The head is a ``ray start --head --block`` process with the dashboard's job server on
127.0.0.1; its environment is a cluster's (the project's Python on PATH, the tracking store in
its own state folder). The submitter's own state folder stays empty: the sweep runs on the
cluster.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.support.chaos import CHAOS_CONFIG, driver_env, epochs_recorded, free_port, wait_until
from tests.support.reconcile import tunepipe

pytestmark = pytest.mark.slow  # a Ray head with its dashboard, two sweeps as jobs: ~2 minutes

BIN = Path(sys.executable).parent
# The head uses token auth, as the shipped cluster configs do; clients pass this token.
TOKEN = secrets.token_hex(32)
TOKEN_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Yield the job server's address and the cluster's state folder."""
    root = tmp_path_factory.mktemp("head")
    temp = Path(tempfile.mkdtemp(prefix="tj-", dir="/tmp"))  # Ray's socket paths stay short
    port = free_port()
    env = driver_env(
        root / "cluster-home",
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        # Ray kills a stopped job's driver 3 s after its SIGTERM by default: too soon for the
        # trials to stop at a checkpoint and the runs to be closed.
        RAY_JOB_STOP_WAIT_TIME_S="60",
    )
    env.update(TOKEN_ENV)
    with (root / "head.log").open("w") as log:
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", f"--port={free_port()}", "--num-cpus=2",
             "--block", f"--temp-dir={temp}", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={port}", "--disable-usage-stats",
             # The job agent's fixed default port is taken by any other Ray on this machine.
             f"--dashboard-agent-listen-port={free_port()}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    address = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _jobs(address) is not None, 120, "the job server", proc)
        yield address, root / "cluster-home"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


def _jobs(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(
            address, headers={"Authorization": f"Bearer {TOKEN}"}
        ).list_jobs()
    except Exception:
        return None


def _http_status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_a_submitted_sweep_runs_on_the_cluster_and_can_be_followed_and_stopped(
    head: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, cluster_home = head
    # Without the token: Ray's own client is refused, and so is a raw request.
    anonymous = tunepipe("submit", str(CHAOS_CONFIG), "--address", address,
                         env=driver_env(tmp_path / "anonymous-home"), cwd=tmp_path)  # fmt: skip
    assert anonymous.returncode == 2, anonymous.stderr[-2000:]
    assert "cannot reach Ray's job server" in anonymous.stderr
    assert "Traceback" not in anonymous.stderr
    assert _http_status(f"{address}/api/jobs/") == 401
    assert _http_status(f"{address}/api/jobs/", token="0" * 64) == 403
    assert _jobs(address) == [], "an unauthenticated submission was accepted"

    env = {**driver_env(tmp_path / "submitter-home"), **TOKEN_ENV}

    bad = tunepipe("submit", str(CHAOS_CONFIG), "--address", address,
                   "--set", "search.method=nosuch", env=env, cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2 and "search.method" in bad.stderr and "Traceback" not in bad.stderr
    assert _jobs(address) == [], "a rejected config was submitted"

    done = tunepipe("submit", str(CHAOS_CONFIG), "--address", address,
                    "--set", "search.num_samples=2", env=env, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    job_id = done.stdout.split("submitted: ")[1].split()[0]
    assert f"tunepipe jobs status|logs|stop {job_id}" in done.stdout
    followed = tunepipe("jobs", "logs", job_id, "--follow", "--address", address,
                        env=env, cwd=tmp_path)  # fmt: skip
    assert "Registered model: models:/chaos/1" in followed.stdout, followed.stdout[-3000:]
    status = tunepipe("jobs", "status", job_id, "--address", address, env=env, cwd=tmp_path)
    assert status.stdout.strip() == "SUCCEEDED"
    tracking = f"sqlite:///{cluster_home / 'mlflow.db'}"
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("chaos").experiment_id])
    assert sorted(r.data.tags["tunepipe.kind"] for r in runs) == ["sweep", "trial", "trial"]
    assert not (tmp_path / "submitter-home").exists(), "the sweep ran on the submitter"

    # From Python: a handle that stops the job; the sweep stops at its trials' checkpoints.
    from pipelines.config import load_config
    from pipelines.sweep.submit import submit_sweep

    for name, value in TOKEN_ENV.items():
        monkeypatch.setenv(name, value)
    job = submit_sweep(load_config(CHAOS_CONFIG, {"name": "stopped"}), address,
                       overrides=["name=stopped"])  # fmt: skip
    wait_until(lambda: max(epochs_recorded(tracking, "stopped"), default=0) >= 1, 240,
               "the second job's first epoch")  # fmt: skip
    assert job.stop()
    assert job.wait(timeout_s=180) == "STOPPED"
    exp = client.get_experiment_by_name("stopped").experiment_id
    (parent,) = client.search_runs([exp], filter_string="tags.`tunepipe.kind` = 'sweep'")
    assert parent.info.status == "KILLED", job.logs()[-3000:]
    assert parent.data.tags["tunepipe.end_reason"] == "interrupted"
    assert not client.search_runs([exp], filter_string="attributes.status = 'RUNNING'")

    unknown = tunepipe("jobs", "status", "nosuch", "--address", address, env=env, cwd=tmp_path)
    assert unknown.returncode == 2 and "no job 'nosuch'" in unknown.stderr
