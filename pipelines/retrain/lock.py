"""One retrain per experiment at a time: an OS file lock, released when the process dies."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.paths import tunepipe_home

#: Exit code when another retrain of the experiment holds the lock (sysexits' EX_TEMPFAIL).
EXIT_BUSY = 75


class RetrainBusy(RuntimeError):
    """Another retrain of the same experiment is running; try again later."""


@contextmanager
def experiment_lock(experiment: str) -> Iterator[Path]:
    """Hold the experiment's retrain lock, or raise :class:`RetrainBusy` at once.

    An OS file lock under ``$TUNEPIPE_HOME/locks``: the kernel releases it when the process
    dies, so a killed retrain never leaves a stale lock behind. It serialises retrains that
    share the state folder; a schedule across machines adds its own (Kubernetes'
    ``concurrencyPolicy: Forbid``, see infra/README.md).
    """
    from filelock import FileLock, Timeout

    path = tunepipe_home() / "locks" / f"retrain-{experiment}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RetrainBusy(
            f"another retrain of {experiment!r} is running (it holds {path}); this one did "
            "nothing. Try again when it has finished."
        ) from None
    try:
        yield path
    finally:
        lock.release()
