"""A sweep tracked by a real ``mlflow server`` with basic auth, its password planted in the URI.

One server and one sweep answer three questions: the sweep records into a server over HTTP; the
server started by ``tunepipe ui --auth``'s code refuses anonymous reads and writes; and a
password written into the tracking URI (as users do with ``$MLFLOW_TRACKING_URI``) reaches the
server (the sweep could not write otherwise) but nothing else: not MLflow's database or
artifacts, not Tune's storage, not the logs, the printed output or any command line.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

from pipelines import run_sweep
from pipelines.paths import tunepipe_home
from pipelines.views.ui import start_mlflow_server, stop_mlflow_server, wait_until_up
from pipelines.views.ui_auth import UiCredentials
from tests.support.configs import shrunk

SECRET = "planted-Secret-7f3a9c"  # the needle the test searches for
ADMIN = UiCredentials("admin", SECRET)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(url: str, *, data: bytes | None = None, user: UiCredentials | None = None) -> int:
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    if user is not None:
        token = base64.b64encode(f"{user.username}:{user.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


class CommandLines:
    """Samples every process's command line while a block runs (what ``ps`` shows anyone)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> CommandLines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
            self.seen.update(out.splitlines())


def _files_holding(secret: str, *folders: Path) -> list[str]:
    needle = secret.encode()
    return [
        str(path)
        for folder in folders
        for path in folder.rglob("*")
        if path.is_file() and needle in path.read_bytes()
    ]


@pytest.mark.slow  # an mlflow server process and a sweep against it: about 60 s on 2 CPUs
@pytest.mark.usefixtures("ray_local")
def test_sweep_on_an_auth_server_with_a_password_in_its_uri_leaks_it_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)  # restored (absent) after the test
    port = _free_port()
    store = tmp_path / "server"
    store.mkdir()
    server = start_mlflow_server(f"sqlite:///{store / 'mlflow.db'}", "127.0.0.1", port, ADMIN)
    base = f"http://127.0.0.1:{port}"
    try:
        with CommandLines() as processes:
            wait_until_up(base, server, timeout=90)
            search = f"{base}/api/2.0/mlflow/experiments/search?max_results=10"
            create = f"{base}/api/2.0/mlflow/experiments/create"
            assert _status(search) == 401
            assert _status(create, data=b'{"name": "anonymous"}') == 401
            assert _status(search, user=UiCredentials("admin", "wrong-password-1")) == 401
            assert _status(search, user=ADMIN) == 200

            uri = f"http://admin:{SECRET}@127.0.0.1:{port}"
            config = shrunk(
                "digits_mlp_random.yaml",
                **{"search.num_samples": 2, "trainable.params.epochs": 2, "tracking.uri": uri},
            )
            assert SECRET not in config.tracking.uri
            summary = run_sweep(config, progress=True)

        client = MlflowClient(base)  # the credentials now come from MLflow's variables
        children = client.search_runs(
            [summary.mlflow_experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{summary.mlflow_parent_run_id}'",
        )
        assert len(children) == 2
        for child in children:
            assert len(client.get_metric_history(child.info.run_id, "val_loss")) == 2
        version = client.get_model_version_by_alias("digits_mlp", "challenger")
        assert version.version == summary.model_version
    finally:
        stop_mlflow_server(server)
    with pytest.raises(ProcessLookupError):
        os.killpg(server.pid, 0)  # no worker of the server outlived it

    printed = capfd.readouterr()
    assert SECRET not in printed.out + printed.err
    assert not [line for line in processes.seen if SECRET in line]
    assert len(processes.seen) > 3, "ps showed nothing: the command-line check did not run"
    # MLflow's database and artifacts, Tune's storage and logs, the state folder, Ray's logs.
    ray_logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    assert _files_holding(SECRET, store, tunepipe_home(), tmp_path, ray_logs) == []


def test_ui_beyond_loopback_without_auth_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "TUNEPIPE_HOME": str(tmp_path / "home")}
    command = [str(Path(sys.executable).parent / "tunepipe"), "ui", "--host", "0.0.0.0"]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr + refused.stdout
    assert "--auth" in refused.stderr + refused.stdout
    assert not (tmp_path / "home" / "mlflow-server.log").exists()

    env.pop("MLFLOW_TRACKING_PASSWORD", None)
    command = [*command, "--auth"]
    no_password = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert no_password.returncode == 2
    assert "MLFLOW_TRACKING_PASSWORD" in no_password.stderr + no_password.stdout
