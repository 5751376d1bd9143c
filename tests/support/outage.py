"""A real ``mlflow server`` to take away from a sweep and give back, and the driver's spool.

The server is the one a team runs: ``mlflow server`` over a SQLite store in a folder of the
test's own, serving artifacts itself (``mlflow-artifacts:/``, proxied to a folder beside the
database), so a driver writes runs, metrics, artifacts and model versions over HTTP only. It
listens on one fixed port for the whole test: stopping it (SIGTERM or SIGKILL to its process
group, workers included) and starting it again over the same store is an outage of the
tracking server, as clients see one. The spool is the folder where a driver keeps what MLflow
has not taken yet (``$TUNEPIPE_HOME/spool/``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipelines.views.ui import stop_mlflow_server, wait_until_up

STARTUP_TIMEOUT_S = 90.0


class MlflowServer:
    """One ``mlflow server`` on 127.0.0.1:``port`` over a SQLite store in ``folder``.

    Args:
        folder: Holds the database, the served artifacts and the server's log.
        port: The port it listens on, each time it is started.

    """

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.log = folder / "mlflow-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        """The tracking URI a client uses."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server's process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Start the server over its store and return once it answers on its port.

        Args:
            timeout: Seconds to wait for its health endpoint.

        """
        assert not self.running, "the server is already up"
        self.folder.mkdir(parents=True, exist_ok=True)
        artifacts = (self.folder / "mlartifacts").resolve()
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{(self.folder / 'mlflow.db').resolve()}",
            "--serve-artifacts",
            "--artifacts-destination", artifacts.as_uri(),
            "--default-artifact-root", "mlflow-artifacts:/",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.folder,
                start_new_session=True,  # its workers form one group, stopped together
            )
        self.starts += 1
        self._wait_until_up(timeout)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server and all of its workers; return once its port refuses connections.

        Args:
            kill: SIGKILL the process group (a crash) instead of SIGTERM (a shutdown).

        """
        process = self.process
        if process is None or process.poll() is not None:
            return
        if kill:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        else:
            stop_mlflow_server(process)
        deadline = time.monotonic() + 30
        while _group_alive(process.pid) or _port_open(self.port):
            assert time.monotonic() < deadline, "the server's workers outlived it"
            time.sleep(0.2)

    def log_tail(self, chars: int = 2000) -> str:
        """Return the end of the server's output (for a failure's story)."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def __enter__(self) -> MlflowServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(kill=True)

    def _wait_until_up(self, timeout: float) -> None:
        assert self.process is not None
        try:
            wait_until_up(self.url, self.process, timeout)
        except (RuntimeError, TimeoutError) as exc:  # with this server's own log, not the UI's
            raise AssertionError(f"{exc}: {self.log_tail()}") from None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def spool_folder(home: Path) -> Path:
    """Return the folder where the drivers of ``home`` spool MLflow's writes."""
    return home / "spool"


def spooled(home: Path) -> list[Path]:
    """Return the spool files that still hold writes (none: everything reached MLflow)."""
    folder = spool_folder(home)
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def spooled_bytes(home: Path) -> int:
    """Return the size of the spool files together (it grows as writes wait)."""
    total = 0
    for path in spooled(home):
        with contextlib.suppress(FileNotFoundError):  # written out and removed meanwhile
            total += path.stat().st_size
    return total


def log_of(result: Any) -> str:
    """Return a completed ``tunepipe`` process's output, stdout then stderr."""
    return f"{result.stdout}{result.stderr}"
