"""Shared fixtures: one real local Ray instance per test session, MLflow on SQLite in tmp_path,
a real S3-compatible store on 127.0.0.1 (moto) for the object-storage tests."""

from __future__ import annotations

import gc
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point every default location (MLflow store, Tune storage) into this test's tmp_path.

    The test also runs in an empty working directory, and fails if anything wrote MLflow state
    there: every store and artifact location must be explicit, never "wherever the cwd is".
    """
    home = tmp_path / "tunepipe-home"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("TUNEPIPE_HOME", str(home))
    monkeypatch.chdir(cwd)
    # Never reach a tracking server or cluster configured in the developer's shell.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("TUNEPIPE_STORAGE", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # Tune installs a SIGINT handler in every fit() that drives it directly and leaves it there:
    # each test starts from and returns to the handlers it found (tests of signals need them).
    handlers = {sig: signal.getsignal(sig) for sig in _CAUGHT_SIGNALS}
    yield home
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    leaked = [name for name in ("mlruns", "mlartifacts", "mlflow.db") if (cwd / name).exists()]
    assert not leaked, f"MLflow state written to the working directory: {leaked}"


_CAUGHT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def pytest_configure(config: pytest.Config) -> None:
    """Start from Python's own SIGINT handler, whatever launched the tests.

    A shell starts a background job (``make test &``) with SIGINT ignored, and the processes
    the tests start would inherit that: Ctrl-C tests of ``tunepipe ui`` and of the sweep would
    then fail for the launcher's sake, not the code's.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A private 2-CPU Ray instance for the whole session (ray.init costs 4-10 s here).

    ``address="local"`` makes sure the tests never attach to another cluster on this machine.
    """
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One compute thread for tiny in-process models, in every installed registered framework.

    Extra intra-op threads only add spin-wait overhead, which balloons on a busy CI box. Each
    framework's ``set_cpu_threads(1)`` does it, as in a one-CPU trial. torch is restored
    afterwards; TensorFlow fixes its pools once per process, so it keeps one.
    """
    from trainables.registry import TRAINABLES

    try:
        import torch
    except ModuleNotFoundError:  # torch not installed: its tests skip themselves
        torch = None
    previous = torch.get_num_threads() if torch is not None else None
    for info in TRAINABLES.values():  # the bundled ones; the user's code has no class here
        if info.user_code:
            continue
        if not info.missing_modules():
            set_cpu_threads = getattr(info.load_class(), "set_cpu_threads", None)
            if set_cpu_threads is not None:  # optional in the protocol
                set_cpu_threads(1)
    yield
    if torch is not None:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def frozen_imports(single_thread: None) -> Iterator[None]:
    """Leave the objects that exist now (the frameworks' modules) out of garbage collections.

    Every Keras setup calls ``keras.backend.clear_session()``, which runs a full ``gc.collect()``:
    with torch, TensorFlow and scikit-learn loaded that takes most of a second on a busy box, for
    each of the dozens of Keras trainables a contract suite builds. Their models are still
    collected.
    """
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start moto's S3 server on a free port of 127.0.0.1; yield its ``http://`` endpoint."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    server = Path(sys.executable).parent / "moto_server"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", "0"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"Running on (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield found.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
