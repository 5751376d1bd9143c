"""Data-parallel trials: each Tune trial drives a Ray Train run of several workers.

With ``resources.workers`` > 1 a trial is a thin driver (:func:`run_data_parallel_trial`): it
starts a Ray Train run whose workers each run the adapter's own epoch loop on a shard of the
trial's batches, and relays every epoch the Train run registers to Tune. This module is the
framework-neutral part (the driver, the relay, the sharding); the workers' side is
:mod:`trainables.torch_data_parallel` (DistributedDataParallel) or
:mod:`trainables.keras_data_parallel` (MultiWorkerMirroredStrategy).

How an epoch is split and summed up:

- Every worker streams the trial's whole, deterministically shuffled epoch (Ray Data keeps block
  order) and trains on every ``world_size``-th batch from its rank on. Batches past the last
  complete group of ``world_size`` are dropped, so every rank takes the same number of steps
  (a gradient all-reduce would otherwise wait forever for the rank that ran out).
- ``train_loss`` is the mean over all ranks' rows (sums and row counts are all-reduced).
- Every rank ends an epoch with rank 0's metrics, so every rank takes the same decisions
  (divergence, early stopping, schedule) on identical numbers and calls the collective
  ``ray.train.report`` equally often.
- Rank 0 alone writes checkpoints (:func:`trainables.reporting.report` in a Train worker).

How Tune sees the trial: a Train callback in the Train controller hands each report (rank 0's
metrics and the checkpoint Train persisted) to a mailbox actor and waits until the driver has
passed it to ``tune.report`` with that checkpoint (:func:`trainables.reporting.relay`), which
copies it into the trial's folder as a real Tune checkpoint. Schedulers, Tune's checkpoint
retention, ``Result.checkpoint`` and PBT therefore work per trial, and the MLflow callback sees
one trial reporting once per epoch. The handshake keeps Train and Tune in lock-step: Train never
deletes a checkpoint before Tune has its copy, and a trial Tune stops is stopped at once.

Resuming: the Train run has a fixed name (``train-trial_id=<id>``) under the trial's folder and
is cleared when a trial attempt starts, because the Tune checkpoint the attempt starts from is the
trial's state of record (a retry, or PBT copying another trial's). Inside one attempt Train's
``FailureConfig`` restarts lost workers from the run's newest checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import ray
from ray.train import UserCallback

from trainables import reporting
from trainables.adapter import TrialSettings, make_trial_function
from trainables.errors import FailedTrialError
from trainables.protocol import Batch, BatchSource, TrialBatches

logger = logging.getLogger(__name__)

_B = TypeVar("_B")

#: Builds a trial's Train run: ``(loop config, run config, workers, per-worker resources)``.
TrainerFactory = Callable[..., Any]

#: The metric that says how many workers trained the epoch.
WORKERS = "workers"
#: Seconds a stopped trial waits for its Train run to abort (remove its workers and their
#: placement group); Tune is told to wait that long (and a little more) before reusing the actor.
ABORT_WAIT_S = 30
#: How often the driver checks whether Tune stopped the trial while its workers train.
STOP_POLL_S = 0.25


@dataclass(frozen=True)
class _Report:
    """One epoch as the Train controller registered it: rank 0's metrics, the checkpoint."""

    metrics: dict[str, Any]
    checkpoint: Any = None


#: What the mailbox hands the driver when the Train run has ended.
_END = "end"


def train_run_name(trial_id: str) -> str:
    """Return the Train run's name for Tune trial ``trial_id`` (fixed, so retries find it)."""
    return f"train-trial_id={trial_id}"


def data_parallel_trial_function(
    settings: TrialSettings, trainer: TrainerFactory
) -> Callable[[dict[str, Any], BatchSource], None]:
    """Return the function Tune runs for each trial: a Train run of ``settings.workers``.

    Args:
        settings: What every trial of the sweep shares.
        trainer: Builds the framework's Train run (the workers' side).

    """

    def run(settings: TrialSettings, hparams: dict[str, Any], data: BatchSource) -> None:
        run_data_parallel_trial(
            settings,
            hparams,
            data,
            workers=settings.workers,
            cpu_per_worker=settings.cpu_per_worker,
            gpu_per_worker=settings.gpu_per_worker,
            max_failures=settings.worker_failures,
            trainer=trainer,
        )

    function = make_trial_function(settings, runner=run)
    # A stopped trial's actor must outlive the abort of its Train run (see the mixin).
    function.__mixins__ = (reporting.AwaitsTrialThread,)  # type: ignore[attr-defined]
    return function


def run_data_parallel_trial(
    settings: TrialSettings,
    hparams: dict[str, Any],
    data: BatchSource,
    *,
    workers: int,
    cpu_per_worker: float,
    gpu_per_worker: float = 0.0,
    max_failures: int = 0,
    trainer: TrainerFactory,
) -> None:
    """Run one Tune trial as a Ray Train run of ``workers`` data-parallel workers.

    Call it from inside a Tune trial (the driver, which itself needs almost no resources).

    Args:
        settings: What every trial of the sweep shares.
        hparams: The trial's resolved hyperparameters.
        data: The sweep's data; every worker streams its trial's batches from it.
        workers: Train workers (at least 2 to be worth it; 1 works too).
        cpu_per_worker: CPUs reserved for each worker.
        gpu_per_worker: GPUs reserved for each worker; above 0 the workers train on CUDA
            with NCCL.
        max_failures: Times Train restarts its worker group after a worker is lost.
        trainer: Builds the framework's Train run: ``trainer(loop_config, run_config=...,
            workers=..., resources=...)``.

    Raises:
        FailedTrialError: If an epoch has fewer batches than workers, or a worker ended the
            trial as failed.
        ray.train.TrainingFailedError: If the workers failed more than ``max_failures`` times.

    """
    _check_batches(data, hparams, workers)
    reporting.allow_slow_stop(ABORT_WAIT_S + 5)
    fs, folder = reporting.trial_storage()
    name = train_run_name(reporting.trial_id())
    _clear_train_run(fs, f"{folder}/{name}")
    mailbox = _Mailbox.remote()  # type: ignore[attr-defined]
    config = {
        "settings": settings,
        "hparams": hparams,
        "data": data,
        "trial_id": reporting.trial_id(),
        "trial_index": reporting.trial_index(),
        "cpus": max(1, int(cpu_per_worker)),
        "gpus": gpu_per_worker,
        "start": reporting.start_checkpoint(),
    }
    built = trainer(
        config,
        run_config=_run_config(name, fs, folder, max_failures, mailbox),
        workers=workers,
        resources=_worker_resources(cpu_per_worker, gpu_per_worker),
    )
    _fit_and_relay(built, mailbox)


def build_trainer(
    trainer_class: type,
    worker_loop: Callable[[dict[str, Any]], None],
    config: dict[str, Any],
    *,
    run_config: Any,
    workers: int,
    resources: dict[str, float],
) -> Any:
    """Return a Ray Train trainer of ``workers`` running ``worker_loop`` with ``config``.

    The framework's trainer class sets up its group (TorchTrainer's process group,
    TensorflowTrainer's ``TF_CONFIG``); on GPUs each worker gets its own.
    """
    import ray.train

    return trainer_class(
        worker_loop,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers,
            use_gpu=resources.get("GPU", 0) > 0,
            resources_per_worker=resources,
        ),
        run_config=run_config,
    )


def worker_session(config: dict[str, Any]) -> reporting.WorkerSession:
    """Return this Train worker's view of its trial (call it in ``train_loop_per_worker``)."""
    import ray.train

    return reporting.WorkerSession(
        trial_id=config["trial_id"],
        trial_index=config["trial_index"],
        cpus=config["cpus"],
        gpus=config["gpus"],
        rank=ray.train.get_context().get_world_rank(),
        start=config["start"],
    )


def _check_batches(data: BatchSource, hparams: Mapping[str, Any], workers: int) -> None:
    """Fail a trial whose epoch cannot give every worker a batch (it would fail every retry)."""
    batches = math.ceil(data.spec.num_train / int(hparams["batch_size"]))
    if batches < workers:
        raise FailedTrialError(
            f"an epoch has {batches} batches of {hparams['batch_size']} rows, fewer than the "
            f"{workers} data-parallel workers; lower batch_size or resources.workers"
        )


def _clear_train_run(fs: Any, path: str) -> None:
    """Remove an earlier attempt's Train run: the Tune checkpoint is what this attempt resumes.

    Only one attempt of a trial runs at a time, so a run folder found now is a dead attempt's.
    """
    import pyarrow.fs

    if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
        fs.delete_dir(path)


def _worker_resources(cpus: float, gpus: float) -> dict[str, float]:
    return {"CPU": cpus, "GPU": gpus} if gpus > 0 else {"CPU": cpus}


def _run_config(name: str, fs: Any, folder: str, max_failures: int, mailbox: Any) -> Any:
    import ray.train

    return ray.train.RunConfig(
        name=name,
        # Explicit: Train's default is ~/ray_results on the controller's node, not the sweep's.
        storage_path=folder,
        storage_filesystem=fs,
        failure_config=ray.train.FailureConfig(max_failures=max_failures),
        # One is enough: the relay hands each checkpoint to Tune before Train registers the
        # next (and deletes this one), and a restarted worker group needs only the newest.
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        callbacks=[_RelayCallback(mailbox)],  # type: ignore[list-item]
    )


# --- the driver: fit in a thread, relay to Tune in the trial's own thread --------------------


def _fit_and_relay(trainer: Any, mailbox: Any) -> None:
    """Run ``trainer.fit()`` in a thread; pass each epoch it reports to Tune from this one.

    ``tune.report`` must run in the trial's thread: that is where Tune stops a trial (it raises
    ``SystemExit`` from the report), and the Train run must then be aborted, not left running
    in an actor Tune may reuse for another trial. The abort is awaited: a Train run killed
    with the trial's actor (its owner) would leave its worker group's placement group behind,
    holding its CPUs and GPUs for the rest of the sweep.
    """
    outcome: dict[str, BaseException] = {}
    thread = threading.Thread(
        target=_fit, args=(trainer, mailbox, outcome), name="tunepipe-train-fit", daemon=True
    )
    thread.start()
    finished = False
    try:
        finished = _relay_reports(mailbox)
    finally:
        if finished:
            thread.join()
        else:
            _abort(mailbox)
        ray.kill(mailbox)  # one process per trial otherwise, for as long as the actor lives
    if "error" in outcome:
        raise _trial_error(outcome["error"])


def _relay_reports(mailbox: Any) -> bool:
    """Pass each epoch to Tune until the Train run ends (True) or Tune stops the trial (False).

    Tune's stop request is checked while the workers train, not only at the next report, so a
    stopped trial frees its workers at once.
    """
    stopped = reporting.stop_signal()
    pending = mailbox.receive.remote()
    while True:
        ready, _ = ray.wait([pending], timeout=STOP_POLL_S)
        if not ready:
            if stopped():
                return False
            continue
        item = ray.get(pending)
        if not isinstance(item, _Report):
            return True
        reporting.relay(item.metrics, item.checkpoint)  # raises SystemExit if Tune stops it
        mailbox.ack.remote(True)
        pending = mailbox.receive.remote()


def _fit(trainer: Any, mailbox: Any, outcome: dict[str, BaseException]) -> None:
    try:
        trainer.fit()
    except BaseException as exc:  # handed to the trial's thread, which raises it
        outcome["error"] = exc
    finally:
        mailbox.close.remote()


def _abort(mailbox: Any) -> None:
    """Stop the Train run: release its controller's pending report, then ask it to abort.

    The controller's own abort removes its worker group and placement group (Train's
    placement-group cleaner does it if the controller dies instead).
    """
    try:
        controller = ray.get(mailbox.cancel.remote(), timeout=ABORT_WAIT_S)
    except Exception:  # best effort: the trial is ending anyway
        logger.warning("could not reach the trial's Train run to abort it", exc_info=True)
        return
    if controller is None:  # stopped before its first report: nothing to reach it by
        logger.warning("the trial's Train run had not reported yet; it is left to Ray")
        return
    try:
        ray.get(controller.abort.remote(), timeout=ABORT_WAIT_S)
    except ray.exceptions.RayActorError:
        pass  # the controller exits as it finishes aborting
    except ray.exceptions.GetTimeoutError:
        logger.warning("the trial's Train run did not abort in %d s; killing it", ABORT_WAIT_S)
        ray.kill(controller, no_restart=True)


def _trial_error(exc: BaseException) -> BaseException:
    """Return a worker's deterministic failure itself (so the trial ends without retries)."""
    from search_spaces.errors import UserInputError

    failures = getattr(exc, "worker_failures", None) or {}
    for failure in failures.values():
        cause = getattr(failure, "cause", failure)
        if isinstance(cause, FailedTrialError | UserInputError):
            return cause
    return exc


@ray.remote(num_cpus=0)
class _Mailbox:
    """Hands Train's reports to the trial's driver one at a time, each acknowledged.

    An async actor: the controller's ``deliver`` waits while the driver reports to Tune.
    """

    def __init__(self) -> None:
        self._items: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        self._acks: asyncio.Queue[bool] = asyncio.Queue()
        self._controller: Any = None
        self._cancelled = False

    async def deliver(self, item: _Report, controller: Any) -> bool:
        """Queue ``item`` for the driver; return once it was reported (False: stop)."""
        self._controller = controller
        if self._cancelled:
            return False
        await self._items.put(item)
        return await self._acks.get()

    async def receive(self) -> Any:
        """Return the next report, or ``_END`` once the Train run is over."""
        return await self._items.get()

    async def ack(self, keep_going: bool) -> None:
        """Release the report being delivered."""
        self._acks.put_nowait(keep_going)

    async def close(self) -> None:
        """Tell the driver the Train run is over."""
        await self._items.put(_END)

    async def cancel(self) -> Any:
        """Release any pending report and refuse later ones; return the Train controller."""
        self._cancelled = True
        self._acks.put_nowait(False)
        return self._controller


class _RelayCallback(UserCallback):  # type: ignore[misc]
    """Runs in the Train controller: passes each report to the driver and waits for it."""

    def __init__(self, mailbox: Any) -> None:
        self._mailbox = mailbox

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        """Hand rank 0's metrics (every rank holds the same) and the checkpoint to the driver."""
        controller = ray.get_runtime_context().current_actor
        report = _Report(dict(metrics[0]), checkpoint)
        # A RayActorError: the trial was stopped and its mailbox removed; the abort is on its way.
        with contextlib.suppress(ray.exceptions.RayActorError):
            ray.get(self._mailbox.deliver.remote(report, controller))


class Shard:
    """One rank's view of a trial's batches: every ``world_size``-th training batch."""

    def __init__(self, data: TrialBatches, rank: int, world_size: int) -> None:
        self._data, self._rank, self._world_size = data, rank, world_size

    def train_batches(self, epoch: int, batch_size: int) -> Iterator[Batch]:
        """Return this rank's batches of the epoch (as many on every rank).

        Data that can deal each rank its own part of the epoch (streamed row groups: the
        ``rank_batches`` method) does so; otherwise every rank reads the whole epoch.
        """
        own_part = getattr(self._data, "rank_batches", None)
        if own_part is not None:
            batches = own_part(epoch, batch_size, self._rank, self._world_size)
            if batches is not None:
                return batches  # type: ignore[no-any-return]
        return shard_batches(
            self._data.train_batches(epoch, batch_size), self._rank, self._world_size
        )

    def val_batches(self) -> Iterable[Batch]:
        """Return the whole validation split (rank 0 evaluates it)."""
        return self._data.val_batches()

    def arrays(self) -> Any:
        """Return both splits whole, as the trial's own batches do."""
        return self._data.arrays()


def shard_batches(batches: Iterable[_B], rank: int, world_size: int) -> Iterator[_B]:
    """Yield batch ``rank`` of each complete group of ``world_size`` batches.

    The tail that does not fill a group is dropped, so every rank yields as many batches.

    Args:
        batches: The epoch's batches, in the same order on every rank.
        rank: This worker's rank.
        world_size: Number of workers.

    """
    group: list[_B] = []
    for batch in batches:
        group.append(batch)
        if len(group) == world_size:
            yield group[rank]
            group = []


class CountedRows:
    """Passes batches through, counting their rows (for the loss mean over all ranks)."""

    def __init__(self, batches: Iterable[Batch]) -> None:
        self._batches, self.rows = batches, 0

    def __iter__(self) -> Iterator[Batch]:
        for batch in self._batches:
            self.rows += len(batch["y"])
            yield batch
