"""The ``tunepipe`` command as a user runs it: a real sweep, then the MLflow UI over its store."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.configs import CONFIGS, REPO

TUNEPIPE = [sys.executable, "-m", "pipelines.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address = str(sock.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run `tunepipe sweep` once as a subprocess; return (TUNEPIPE_HOME, its stdout)."""
    home = tmp_path_factory.mktemp("cli-home")
    env = {**os.environ, "TUNEPIPE_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    completed = subprocess.run(
        [*TUNEPIPE, "sweep", str(CONFIGS / "digits_mlp_random.yaml"),
         "--set", "search.num_samples=2", "--set", "trainable.params.epochs=2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    return home, completed.stdout


def test_sweep_prints_best_config_and_where_to_look(finished_sweep: tuple[Path, str]) -> None:
    home, stdout = finished_sweep
    assert "Top trials by val_loss (min)" in stdout
    assert re.search(r"Best val_loss: \d+\.\d+", stdout)
    assert "Best config:" in stdout
    assert "tunepipe ui" in stdout
    # The same link `tunepipe ui` prints: the parent run in the classic ML view.
    assert re.search(
        r"http://127\.0\.0\.1:5000/#/experiments/\d+/runs/[0-9a-f]{32}\?workflowType=machine_learning",
        stdout,
    )
    assert (home / "mlflow.db").is_file()
    assert "Traceback" not in stdout


def test_ui_serves_the_store_on_loopback_and_stops_on_ctrl_c(
    finished_sweep: tuple[Path, str],
) -> None:
    home, stdout = finished_sweep
    parent_run = re.search(r"sweep run\s+([0-9a-f]{32})", stdout)
    assert parent_run, stdout
    port = _free_port()
    env = {**os.environ, "TUNEPIPE_HOME": str(home)}
    server = subprocess.Popen(
        [*TUNEPIPE, "ui", str(CONFIGS / "digits_mlp_random.yaml"), "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # blocks until the server answered its health check
        match = re.search(r"(http://\S+)", line)
        assert match, line + (server.stderr.read() if server.poll() is not None else "")
        link = match.group(1)
        assert link.startswith(f"http://127.0.0.1:{port}/#/experiments/")
        assert parent_run.group(1) in link
        assert "workflowType=machine_learning" in link

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={parent_run.group(1)}"
        with urllib.request.urlopen(api, timeout=10) as response:
            run = json.load(response)["run"]
        assert run["info"]["status"] == "FINISHED"

        other = _non_loopback_address()
        if other is not None:  # bound to loopback only: another interface must refuse
            with pytest.raises(OSError), socket.create_connection((other, port), timeout=2):
                pass
    finally:
        server.send_signal(signal.SIGINT)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert code == 0
    time.sleep(0.5)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the MLflow server child was stopped too


def test_validate_switches_to_tensorflow_by_one_key_without_its_log_noise(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    config = str(CONFIGS / "mnist_cnn.yaml")
    done = subprocess.run(
        [*TUNEPIPE, "validate", config, "--set", "trainable.framework=tensorflow"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "val_accuracy" in output
    noise = re.compile(r"tensorflow/|oneDNN|cpu_feature_guard|absl::|^[IWE]\d{4} ", re.M)
    assert not noise.search(output), output[-3000:]
