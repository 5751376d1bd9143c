"""The only module that talks to Ray Tune's reporting and checkpoint API.

When Ray changes this API, this file is the one that changes. Everything else in a trial works
with plain dicts and directories.

It also has an offline mode (:func:`offline`): the same trial code then runs outside Tune, its
reports collected in a list. ``tunepipe replay`` re-trains a recorded trial this way.

And a Ray Train worker mode (:func:`train_worker`) for data-parallel trials
(:mod:`trainables.data_parallel`): the same epoch loop runs in every worker of a Train run
and reports through ``ray.train``, rank 0 alone writing checkpoints; the trial's driver relays what
Train registered to Tune (:func:`relay`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune

from trainables.checkpoint_manifest import damage, write_manifest
from trainables.results import NODE_ID, trial_index_from_id

logger = logging.getLogger(__name__)


@dataclass
class OfflineSession:
    """A trial run outside Tune: its resources, its index and what it reported."""

    cpus: int
    trial_index: int
    reports: list[dict[str, Any]] = field(default_factory=list)


_offline: OfflineSession | None = None


@dataclass(frozen=True)
class WorkerSession:
    """One Ray Train worker of a data-parallel trial.

    Attributes:
        trial_id: The Tune trial the Train run belongs to (names temporary folders).
        trial_index: The trial's number in its sweep.
        cpus: CPUs reserved for this worker.
        gpus: GPUs reserved for this worker.
        rank: The worker's world rank; rank 0 alone writes checkpoints.
        start: The checkpoint the trial starts from when its Train run has none yet (the Tune
            checkpoint the driver was restored from), or None.

    """

    trial_id: str
    trial_index: int
    cpus: int
    gpus: float
    rank: int
    start: Any = None


_worker: WorkerSession | None = None


@contextmanager
def train_worker(session: WorkerSession) -> Iterator[WorkerSession]:
    """Run trial code in a Ray Train worker: reports and checkpoints go through ``ray.train``."""
    global _worker
    previous, _worker = _worker, session
    try:
        yield session
    finally:
        _worker = previous


@contextmanager
def offline(cpus: int, trial_index: int) -> Iterator[OfflineSession]:
    """Run trial code outside Tune: reports are collected, no checkpoint is restored."""
    global _offline
    previous, _offline = _offline, OfflineSession(cpus, trial_index)
    try:
        yield _offline
    finally:
        _offline = previous


@contextmanager
def latest_checkpoint() -> Iterator[Path | None]:
    """Yield a local copy of the trial's newest whole checkpoint, or None on a fresh start.

    The checkpoint Tune hands back is verified against its manifest first; if it is gone or
    damaged, the trial's other checkpoints serve instead, newest first (the epoch counter comes
    from the checkpoint itself). With none whole the trial starts over rather than failing on
    every retry.
    """
    if _offline is not None:
        yield None
        return
    checkpoint = _current_checkpoint()
    if checkpoint is None:
        yield None
        return
    for candidate in _candidates(checkpoint):
        with candidate.as_directory() as directory:
            reason = damage(Path(directory))
            if reason is None:
                if candidate.path != checkpoint.path:
                    logger.warning("resuming from %s instead", candidate.path)
                yield Path(directory)
                return
        logger.warning("checkpoint %s is damaged: %s", candidate.path, reason)
    logger.warning("no whole checkpoint of this trial is left; it starts from the beginning")
    yield None


def _current_checkpoint() -> Any:
    """Return the checkpoint to resume from: Tune's, or in a Train worker its run's newest.

    A Train run that has registered no checkpoint yet (its first attempt in this trial attempt)
    starts from the Tune checkpoint the driver handed in: Tune's is the trial's state of record
    (a retry, or PBT's exploit step copying another trial's).
    """
    if _worker is None:
        return tune.get_checkpoint()
    import ray.train

    return ray.train.get_checkpoint() or _worker.start


def _candidates(checkpoint: Any) -> list[Any]:
    """Return ``checkpoint`` if it still exists, then the trial's other checkpoints, newest first.

    Tune deletes a trial's checkpoints beyond ``num_to_keep`` as soon as a newer one is
    registered, while its experiment snapshot (what a resumed sweep starts from) is uploaded
    later: a driver killed in between leaves a snapshot naming a deleted checkpoint. A killed
    upload leaves a newer one half written; both cases are settled by the manifest check.
    """
    import pyarrow.fs

    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    exists = fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound
    if not exists:
        logger.warning("checkpoint %s is gone (deleted after Tune's last snapshot)", path)
    siblings = [other for other in trial_checkpoints(fs, path) if other != path]
    # The same class as the checkpoint: Tune's and Train's are distinct classes.
    others = [type(checkpoint)(sibling, filesystem=fs) for sibling in siblings]
    return [checkpoint, *others] if exists else others


def trial_checkpoints(fs: Any, checkpoint_path: str) -> list[str]:
    """Return the paths of the checkpoint folders beside ``checkpoint_path``, newest first.

    Args:
        fs: The pyarrow filesystem of the trial's storage.
        checkpoint_path: One checkpoint of the trial (it need not exist any more).

    """
    import pyarrow.fs

    folder = checkpoint_path.rstrip("/").rpartition("/")[0]
    found = fs.get_file_info(pyarrow.fs.FileSelector(folder, allow_not_found=True))
    # Folders only: a Train run keeps its checkpoint_manager_snapshot.json beside them.
    names = (
        i.path.rstrip("/")
        for i in found
        if i.base_name.startswith("checkpoint_") and i.type == pyarrow.fs.FileType.Directory
    )
    return sorted(names, reverse=True)


def report(metrics: dict[str, Any], *, save: Callable[[Path], None] | None = None) -> None:
    """Report one epoch's metrics, with a checkpoint written by ``save`` if given.

    The Ray node id is added to the metrics: Tune's own ``node_ip`` cannot tell apart two nodes
    that share a machine.
    """
    metrics = {**metrics, NODE_ID: ray.get_runtime_context().get_node_id()}
    if _offline is not None:
        _offline.reports.append(metrics)
        return
    if _worker is not None:
        _report_to_train(metrics, save)
        return
    if save is None:
        tune.report(metrics)
        return
    with temporary_folder("ckpt") as directory:
        save(Path(directory))
        write_manifest(Path(directory))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def _report_to_train(metrics: dict[str, Any], save: Callable[[Path], None] | None) -> None:
    """Report from a Train worker; only rank 0 writes the checkpoint (the weights are in sync).

    ``ray.train.report`` is collective: every worker calls it once per epoch, checkpoint or not.
    """
    import ray.train

    assert _worker is not None
    if save is None or _worker.rank != 0:
        ray.train.report(metrics)
        return
    with temporary_folder("ckpt") as directory:
        save(Path(directory))
        write_manifest(Path(directory))
        # Uploaded before report returns (the default synchronous upload), so the folder can go.
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def relay(metrics: dict[str, Any], checkpoint: Any = None) -> None:
    """Report to Tune what a data-parallel trial's Train run registered (in the trial's driver).

    Args:
        metrics: Rank 0's metrics of the epoch (already aggregated across workers).
        checkpoint: The checkpoint Train persisted in its storage, or None. Tune copies it into
            the trial's folder, so it becomes a real Tune checkpoint (kept, scored and restored
            by Tune like any other).

    """
    if checkpoint is None:
        tune.report(metrics)
        return
    tune.report(
        metrics, checkpoint=tune.Checkpoint(checkpoint.path, filesystem=checkpoint.filesystem)
    )


def stop_signal() -> Callable[[], bool]:
    """Return a check of whether Tune asked the running trial to stop (a scheduler, a reuse).

    A function trainable learns of it only at its next ``tune.report``; a data-parallel trial's
    driver waits on its workers between reports and asks instead, because Tune reuses the
    actor for the next trial only if the function returns within 2 s of the request. The
    check holds on to the session's event (internal to Ray 2.x; never set where it is
    missing): Tune ends the session as it stops the trial, so looking it up afresh would then
    find no session and miss the stop.
    """
    if _offline is not None or _worker is not None:
        return lambda: False
    from ray.train._internal.session import get_session

    event = getattr(get_session(), "stop_event", None)
    return (lambda: False) if event is None else event.is_set


class AwaitsTrialThread:
    """Mixin of a function trainable whose trial thread must finish its own stop.

    Tune's function trainable, stopped for good rather than kept for reuse, ends its session
    without waiting for the trial's thread, and the actor exits right after, killing the thread
    where it stands. A data-parallel trial's thread is then aborting its Train run; cut short,
    the run's placement group (which Train's own cleaner removes only where Ray's state API
    runs) holds its workers' CPUs and GPUs until the sweep ends. This waits for the thread as
    long as a reuse would (:func:`allow_slow_stop`). Tune mixes it in through the function's
    ``__mixins__`` (see :func:`ray.tune.trainable.function_trainable.wrap_function`).
    """

    def cleanup(self) -> None:
        """End the session as Tune does, then wait for the trial's thread to finish."""
        from ray.train._internal.session import get_session

        thread = getattr(get_session(), "training_thread", None)
        try:
            super().cleanup()  # type: ignore[misc]
        finally:
            if thread is not None and thread.is_alive():
                thread.join(timeout=float(os.environ.get("TUNE_FUNCTION_THREAD_TIMEOUT_S", 2)))


def allow_slow_stop(seconds: int) -> None:
    """Let Tune wait ``seconds`` for this trial to end after asking it to stop (default 2 s).

    A data-parallel trial that is stopped aborts its Train run and waits for it: the run's
    worker group holds a placement group that only the run removes. Tune reads
    ``TUNE_FUNCTION_THREAD_TIMEOUT_S`` in the trial's process when it reuses the actor; past
    the wait it gives up on reuse and fails the next trial instead.
    """
    os.environ["TUNE_FUNCTION_THREAD_TIMEOUT_S"] = str(int(seconds))


def start_checkpoint() -> Any:
    """Return the Tune checkpoint the running trial was restored from, or None (in a driver)."""
    return None if _offline is not None else tune.get_checkpoint()


def trial_storage() -> tuple[Any, str]:
    """Return the running trial's ``(pyarrow filesystem, folder path)`` in the sweep's storage."""
    storage = tune.get_context().get_storage()
    return storage.storage_filesystem, storage.trial_fs_path


def trial_id() -> str:
    """Return the running trial's Tune id."""
    return _trial_id()


def temporary_folder(kind: str) -> tempfile.TemporaryDirectory[str]:
    """Return a temporary folder named after the running trial (``tunepipe-<trial>-<kind>-*``).

    A worker killed mid-trial cannot remove its temporary folders; named after the trial, they
    are found and removed by the trial's next attempt (:func:`remove_leftovers`) or, on the
    driver's machine, by the sweep when it ends.
    """
    return tempfile.TemporaryDirectory(prefix=temporary_prefix(kind))


def temporary_prefix(kind: str) -> str:
    """Return the name prefix of the running trial's temporary folders of ``kind``.

    A Train worker's carry its rank too: the ranks of a trial run side by side on one node.
    """
    return f"{_own_prefix()}{kind}-"


def _own_prefix() -> str:
    rank = f"rank{_worker.rank}-" if _worker is not None else ""
    return f"{leftover_prefix(_trial_id())}{rank}"


def remove_worker_leftovers() -> None:
    """Remove, on this node, what an earlier worker of this rank of this trial left behind.

    Train restarts a trial's whole worker group when one worker fails, killing the others
    mid-epoch; only one worker of a rank runs at a time, so its folders found now are dead.
    """
    if _worker is None:
        return
    for folder in Path(tempfile.gettempdir()).glob(f"{_own_prefix()}*"):
        shutil.rmtree(folder, ignore_errors=True)


def leftover_prefix(trial_id: str) -> str:
    """Return the name prefix of trial ``trial_id``'s temporary folders."""
    return f"tunepipe-{trial_id}-"


def remove_leftovers(trial_ids: Iterable[str] | None = None) -> None:
    """Remove, on this machine, the temporary folders of ``trial_ids`` (default: this trial).

    Only one attempt of a trial runs at a time, so any folder of the running trial found at its
    start was left by an earlier attempt that was killed.
    """
    temp = Path(tempfile.gettempdir())
    for trial_id in [_trial_id()] if trial_ids is None else trial_ids:
        for folder in temp.glob(f"{leftover_prefix(trial_id)}*"):
            shutil.rmtree(folder, ignore_errors=True)


def _trial_id() -> str:
    if _worker is not None:
        return _worker.trial_id
    if _offline is not None:
        return f"offline{os.getpid()}"
    return tune.get_context().get_trial_id() or f"pid{os.getpid()}"


def trial_resources() -> tuple[int, float]:
    """Return ``(cpus, gpus)`` reserved for the running trial."""
    if _worker is not None:
        return _worker.cpus, _worker.gpus
    if _offline is not None:
        return _offline.cpus, 0.0
    resources = tune.get_context().get_trial_resources()
    bundle = resources.required_resources
    return max(1, int(bundle.get("CPU", 1))), float(bundle.get("GPU", 0.0))


def trial_index() -> int:
    """Return the trial's number in its sweep (the suffix of Tune's trial id, ``..._00003``)."""
    if _worker is not None:
        return _worker.trial_index
    if _offline is not None:
        return _offline.trial_index
    return trial_index_from_id(tune.get_context().get_trial_id() or "")
