"""Real processes for the chaos suite: a sweep driver to kill, and waiting for it to get going."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.configs import REPO

#: The chaos suite's sweep: 3 trials of 6 slow epochs (tests/chaos/sweep.yaml).
CHAOS_CONFIG = REPO / "tests" / "chaos" / "sweep.yaml"
EPOCHS = 6
TRIALS = 3
#: Any credentials do for moto; real ones reach every process through its environment the same way.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "chaos", "AWS_SECRET_ACCESS_KEY": "chaos-secret"}


def driver_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a driver process: its own state folder, no stray cluster or store."""
    stray = {"RAY_ADDRESS", "MLFLOW_TRACKING_URI", "TUNEPIPE_STORAGE"}
    env = {k: v for k, v in os.environ.items() if k not in stray}
    env.update(
        TUNEPIPE_HOME=str(home),
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def start_driver(*args: str, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[Any]:
    """Start ``tunepipe sweep ...`` in a session of its own (its Ray goes with its group)."""
    command = [str(Path(sys.executable).parent / "tunepipe"), "sweep", *args]
    out = log.open("w")
    return subprocess.Popen(
        command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def epochs_recorded(tracking_uri: str, experiment: str) -> list[int]:
    """Return, per child run so far, how many epochs MLflow holds (empty before the sweep)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        children = client.search_runs(
            [exp.experiment_id], filter_string="tags.`tunepipe.kind` = 'trial'"
        )
        return [len(client.get_metric_history(c.info.run_id, "epoch")) for c in children]
    except Exception:  # the store is being created by the driver
        return []


def wait_until(condition: Callable[[], bool], timeout: float, what: str, proc: Any = None) -> None:
    """Poll ``condition`` every half second; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver exited ({proc.returncode}) before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_bucket(endpoint: str, bucket: str) -> None:
    """Create ``bucket`` on the S3 server at ``endpoint`` (through pyarrow, as Tune writes)."""
    import pyarrow.fs

    os.environ.update(S3_CREDENTIALS)
    fs = pyarrow.fs.S3FileSystem(
        endpoint_override=endpoint.removeprefix("http://"),
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    )
    fs.create_dir(bucket)
