"""The torch side of data-parallel trials: DistributedDataParallel workers in a TorchTrainer.

Each worker runs the adapter's epoch loop (:class:`~trainables.adapter._Trial`) with the model
wrapped in ``DistributedDataParallel`` (gloo on CPU, NCCL on GPU). Validation (and the sweep's
extra metrics) runs on rank 0 alone over the whole split, the weights being the same on every
rank, and rank 0's epoch metrics are broadcast. The driver, the relay to Tune and the sharding
are framework-neutral: :mod:`trainables.data_parallel`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import ray

from trainables import reporting
from trainables.adapter import TrialSettings, _Trial
from trainables.data_parallel import WORKERS, CountedRows, Shard, build_trainer, worker_session
from trainables.data_parallel import data_parallel_trial_function as _trial_function
from trainables.errors import FailedTrialError
from trainables.protocol import Batch, BatchSource
from trainables.results import PLACEMENT_GROUP

logger = logging.getLogger(__name__)


def data_parallel_trial_function(settings: TrialSettings) -> Any:
    """Return the function Tune runs for each data-parallel torch trial."""
    return _trial_function(settings, torch_trainer)


def torch_trainer(config: dict[str, Any], **train_run: Any) -> Any:
    """Return the TorchTrainer of one data-parallel trial (NCCL on GPUs, gloo on CPUs)."""
    from ray.train.torch import TorchTrainer

    return build_trainer(TorchTrainer, _worker_loop, config, **train_run)


# --- the workers ---------------------------------------------------------------------------


def _worker_loop(config: dict[str, Any]) -> None:
    """Run the adapter's epoch loop on this worker's shard (the ``train_loop_per_worker``)."""
    session = worker_session(config)
    with reporting.train_worker(session):
        reporting.remove_worker_leftovers()
        _use_worker_device(config["gpus"])
        _DataParallelTrial(config["settings"], config["hparams"], config["data"]).run()


def _use_worker_device(gpus: float) -> None:
    """Make ``"cuda"`` mean this worker's GPU (workers on a node may all see every GPU)."""
    import torch

    if gpus > 0 and torch.cuda.is_available():
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())


class _DataParallelTrial(_Trial):
    """The adapter's epoch loop, with DDP training on a shard and metrics shared by all ranks."""

    def __init__(self, settings: TrialSettings, hparams: dict[str, Any], data: BatchSource):
        import torch.distributed as dist

        super().__init__(settings, hparams, data)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        group = ray.util.get_current_placement_group()
        self.placement_group = group.id.hex() if group is not None else ""
        self.data = Shard(self.data, self.rank, self.world_size)
        self._wrap_trainable()

    def _wrap_trainable(self) -> None:
        """Train through DDP (gradients averaged over the ranks); evaluate the plain module.

        Checkpoints keep the plain module's parameter names, so they load into any trial,
        data-parallel or not.
        """
        from torch.nn.parallel import DistributedDataParallel

        trainable = self.trainable
        if not hasattr(trainable, "train_through"):
            raise FailedTrialError(
                "data-parallel trials (resources.workers) need the torch trainable"
            )
        module = trainable.model
        device = next(module.parameters()).device
        trainable.train_through(
            lambda plain: DistributedDataParallel(
                plain, device_ids=[device.index] if device.type == "cuda" else None
            )
        )
        train_epoch, evaluate = trainable.train_epoch, trainable.evaluate

        def train_on_shard(batches: Iterable[Batch]) -> dict[str, float]:
            counted = CountedRows(batches)
            metrics = dict(train_epoch(counted))
            loss_sum, rows = _all_reduce([metrics["train_loss"] * counted.rows, counted.rows])
            _check_replicas_agree(module)
            return {**metrics, "train_loss": loss_sum / rows}

        def evaluate_on_rank_0(batches: Iterable[Batch]) -> dict[str, float]:
            metrics: dict[str, float] = evaluate(batches) if self.rank == 0 else {}
            shared: dict[str, float] = _broadcast(metrics)
            return shared

        trainable.train_epoch, trainable.evaluate = train_on_shard, evaluate_on_rank_0

    def _train_and_evaluate(self, epoch: int) -> dict[str, Any]:
        metrics = super()._train_and_evaluate(epoch)
        metrics[WORKERS] = self.world_size
        metrics[PLACEMENT_GROUP] = self.placement_group
        # Bit-identical metrics on every rank, so every rank decides alike.
        shared: dict[str, Any] = _broadcast(metrics)
        return shared

    def _extra_metrics(self) -> dict[str, float]:
        # Rank 0's are broadcast with the rest of the epoch's metrics.
        return super()._extra_metrics() if self.rank == 0 else {}


def _all_reduce(values: list[float], *, maximum: bool = False) -> list[float]:
    """Sum (or take the maximum of) ``values`` element-wise over all ranks, in float64."""
    import torch
    import torch.distributed as dist

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if maximum else dist.ReduceOp.SUM)
    return [float(v) for v in tensor.tolist()]


def _check_replicas_agree(module: Any) -> None:
    """Fail the trial if the ranks' weights drifted apart (their gradients were not averaged).

    One all-reduce of two numbers per epoch: the largest and the (negated) smallest checksum.
    """
    import torch

    with torch.no_grad():
        checksum = float(sum(p.double().sum() for p in module.parameters()))
    largest, negated_smallest = _all_reduce([checksum, -checksum], maximum=True)
    if largest + negated_smallest > 1e-6 * max(1.0, abs(checksum)):
        raise FailedTrialError(
            f"the data-parallel workers' weights differ after an epoch (checksums "
            f"{-negated_smallest:.6g} to {largest:.6g}): their gradients were not synchronised"
        )


def _broadcast(value: Any) -> Any:
    """Return rank 0's ``value`` on every rank."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
