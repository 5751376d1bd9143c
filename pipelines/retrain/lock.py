"""One retrain per experiment at a time: an OS file lock, released when the process dies."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.paths import PRIVATE_FILE_MODE, private_dir, tunepipe_home

#: Exit code when another retrain of the experiment holds the lock (sysexits' EX_TEMPFAIL).
EXIT_BUSY = 75


class RetrainBusy(RuntimeError):
    """Another retrain of the same experiment is running; try again later."""


@contextmanager
def experiment_lock(experiment: str) -> Iterator[Path]:
    """Hold the experiment's retrain lock, or raise :class:`RetrainBusy` at once.

    An OS file lock under ``$TUNEPIPE_HOME/locks`` (mode 0600, in folders of mode 0700): the
    kernel releases it when the process dies, so a killed retrain never leaves a stale lock
    behind. It serialises retrains that share the state folder; a schedule across machines adds
    its own (Kubernetes' ``concurrencyPolicy: Forbid``, see infra/README.md).
    """
    from filelock import FileLock, Timeout

    # Private: another user on the machine can neither read the state nor take the lock to
    # block every retrain. The first retrain creates the state folder here, 0700 from the start.
    path = private_dir(tunepipe_home() / "locks") / f"retrain-{experiment}.lock"
    lock = FileLock(str(path), timeout=0, mode=PRIVATE_FILE_MODE)
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
