"""``tunepipe ui``: the MLflow UI over the project's store, bound to loopback by default."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console

from pipelines.errors import ConfigError
from pipelines.paths import (
    artifact_root_for,
    default_artifact_root,
    default_tracking_uri,
    private_dir,
    tunepipe_home,
)
from pipelines.secrets import with_credentials
from pipelines.tracking.spool import sync_stopped_drivers
from pipelines.views.links import experiment_link, run_link
from pipelines.views.ui_auth import (
    UiCredentials,
    auth_server_environment,
    check_exposure,
    read_credentials,
)

STARTUP_TIMEOUT_S = 90.0


def start_mlflow_server(
    tracking_uri: str, host: str, port: int, credentials: UiCredentials | None = None
) -> subprocess.Popen[bytes]:
    """Start ``mlflow server`` over ``tracking_uri`` and return its process (not yet ready).

    Args:
        tracking_uri: The store to serve (SQLite, a database or a folder).
        host: The interface to bind.
        port: The port to listen on.
        credentials: The admin user of MLflow's basic-auth app; None serves without auth.

    The store's URI reaches the server through its environment: a database password in it
    would show in ``ps`` on a command line.

    """
    if not tracking_uri.startswith(("sqlite:", "postgresql", "mysql", "file:")):
        raise ConfigError(
            f"cannot serve a UI for {tracking_uri!r}: it is already a server",
            key="tracking.uri",
            fix=f"open {tracking_uri} in a browser instead",
        )
    artifacts = (artifact_root_for(tracking_uri) or default_artifact_root()).as_uri()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--default-artifact-root", artifacts,
        "--artifacts-destination", artifacts,
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": with_credentials(tracking_uri)}
    if credentials is not None:
        command += ["--app-name", "basic-auth"]
        env.update(auth_server_environment(credentials))
    # MLflow 3 also starts seven background job consumers (for its GenAI jobs) unless told not
    # to; the UI of a sweep needs none of them, and on a small machine they cost seconds.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    log_path = server_log_path()
    private_dir(log_path.parent)
    with log_path.open("ab") as log:  # a pipe nobody reads would block a chatty server
        # Its own session: the server's uvicorn workers form one process group that
        # stop_mlflow_server ends together (ending only the parent would orphan them).
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def server_log_path() -> Path:
    """Return the file the MLflow server started by tunepipe writes its output to."""
    return tunepipe_home() / "mlflow-server.log"


def stop_mlflow_server(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Stop a server from :func:`start_mlflow_server` with all of its worker processes."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        pass  # it ended on its own in the meantime


def wait_until_up(base_url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll the server's health endpoint until it answers, or raise with its error output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = server_log_path().read_text(errors="replace")[-500:]
            raise RuntimeError(f"mlflow server exited with {process.returncode}: {tail}")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"mlflow server did not answer at {base_url} within {timeout:.0f}s")


def latest_sweep_link(tracking_uri: str, experiment_name: str, base_url: str) -> str | None:
    """Return the UI link to the newest sweep of ``experiment_name``, if there is one."""
    from pipelines.tracking import queries

    experiment_id = queries.find_experiment(tracking_uri, experiment_name)
    if experiment_id is None:
        return None
    run_id = queries.latest_sweep(tracking_uri, experiment_id)
    if run_id is None:
        return experiment_link(base_url, experiment_id)
    return run_link(base_url, experiment_id, run_id)


def serve_ui(
    config: Path | None,
    *,
    host: str,
    port: int,
    console: Console,
    auth: bool = False,
    auth_file: Path | None = None,
) -> None:
    """Serve the UI until Ctrl-C, printing the link to the config's latest sweep.

    Args:
        config: An experiment file whose store and latest sweep to show (else the default store).
        host: The interface to bind; beyond loopback only with ``auth``.
        port: The port to listen on.
        console: Where the link is printed.
        auth: Serve MLflow's basic-auth app (anonymous requests get 401).
        auth_file: A file with one line ``user:password`` for the admin user (else MLflow's
            ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``).

    """
    check_exposure(host, auth or auth_file is not None)
    credentials = read_credentials(auth_file) if auth or auth_file is not None else None
    tracking_uri, experiment = default_tracking_uri(), None
    if config is not None:
        from pipelines.config import load_config

        loaded = load_config(config)
        tracking_uri, experiment = loaded.tracking.uri, loaded.experiment_name
    # The store is local (the UI serves it): what stopped sweeps spooled is written first.
    sync_stopped_drivers(tracking_uri)
    base_url = f"http://{host}:{port}"
    process = start_mlflow_server(tracking_uri, host, port, credentials)
    # A service manager (or `kill`) stops us with SIGTERM: stop the server as on Ctrl-C.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        wait_until_up(base_url, process, STARTUP_TIMEOUT_S)
        link = latest_sweep_link(tracking_uri, experiment, base_url) if experiment else None
        console.print(f"MLflow UI: [bold]{link or base_url}[/]  (Ctrl-C to stop)", highlight=False)
        process.wait()
    except KeyboardInterrupt:
        console.print("stopping the MLflow UI")
    finally:
        stop_mlflow_server(process)
        signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
