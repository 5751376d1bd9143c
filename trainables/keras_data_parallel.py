"""The Keras side of data-parallel trials: MultiWorkerMirroredStrategy workers in a Train run.

Each worker of a ``TensorflowTrainer`` (which sets ``TF_CONFIG`` for the group) fixes
TensorFlow's threads, creates a ``MultiWorkerMirroredStrategy`` (both before TensorFlow runs any
op) and runs the adapter's epoch loop inside the strategy's scope. The Keras trainable, set up
there, mirrors its model and optimiser and lets the Keras optimiser sum each step's gradients
over the workers (:attr:`trainables.keras_trainable.KerasTrainable.replicas`); the initial
weights are the chief's on every worker.

TensorFlow has no collective for Python objects, so every rank evaluates the validation split
(the weights being the same) and rank 0's numbers are then shared with a masked sum: every rank
ends the epoch with the same metrics, and takes the same decisions. After each epoch the ranks
compare their weights' checksums and fail the trial loudly if they drifted apart. The driver,
the relay to Tune and the sharding are framework-neutral: :mod:`trainables.data_parallel`.
"""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Real
from typing import Any

import ray

from trainables import reporting
from trainables.adapter import TrialSettings, _Trial
from trainables.data_parallel import WORKERS, CountedRows, Shard, build_trainer, worker_session
from trainables.data_parallel import data_parallel_trial_function as _trial_function
from trainables.errors import FailedTrialError
from trainables.protocol import Batch, BatchSource
from trainables.results import PLACEMENT_GROUP


def data_parallel_trial_function(settings: TrialSettings) -> Any:
    """Return the function Tune runs for each data-parallel Keras trial."""
    return _trial_function(settings, keras_trainer)


def keras_trainer(config: dict[str, Any], **train_run: Any) -> Any:
    """Return the TensorflowTrainer of one data-parallel trial."""
    from ray.train.tensorflow import TensorflowTrainer

    return build_trainer(TensorflowTrainer, _worker_loop, config, **train_run)


def _worker_loop(config: dict[str, Any]) -> None:
    """Run the adapter's epoch loop on this worker's shard (the ``train_loop_per_worker``)."""
    from trainables.keras_runtime import limit_cpu_threads, tf

    session = worker_session(config)
    with reporting.train_worker(session):
        reporting.remove_worker_leftovers()
        # Both before TensorFlow runs an op: its thread pools and the collective group are
        # fixed then (the strategy reads TF_CONFIG, which the trainer set).
        limit_cpu_threads(config["cpus"])
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        with strategy.scope():
            collectives = _Collectives(strategy)
            _DataParallelTrial(
                config["settings"], config["hparams"], config["data"], collectives
            ).run()


class _Collectives:
    """Sums over the workers, and rank 0's numbers shared with all, through the strategy."""

    def __init__(self, strategy: Any) -> None:
        from trainables.keras_runtime import tf

        self._tf = tf
        self.rank = int(ray.train.get_context().get_world_rank())
        self.world_size = int(strategy.num_replicas_in_sync)

        def all_reduce(values: Any) -> Any:
            # A cross-replica reduce of each worker's values: the same sum on every worker.
            return strategy.reduce("SUM", strategy.run(tf.identity, args=(values,)), axis=None)

        self._all_reduce = tf.function(all_reduce, reduce_retracing=True)

    def sum(self, values: list[float]) -> list[float]:
        """Return ``values`` summed element-wise over all ranks (float64)."""
        tensor = self._tf.constant(values, dtype=self._tf.float64)
        return [float(v) for v in self._all_reduce(tensor).numpy().tolist()]

    def from_rank_0(self, values: list[float]) -> list[float]:
        """Return rank 0's ``values`` on every rank (every rank passes as many)."""
        return self.sum(values if self.rank == 0 else [0.0] * len(values))


class _DataParallelTrial(_Trial):
    """The adapter's epoch loop on a shard, with metrics and decisions shared by all ranks."""

    def __init__(
        self,
        settings: TrialSettings,
        hparams: dict[str, Any],
        data: BatchSource,
        collectives: _Collectives,
    ) -> None:
        super().__init__(settings, hparams, data)
        self.collectives = collectives
        if getattr(self.trainable, "replicas", 1) < 2:
            raise FailedTrialError(
                "data-parallel Keras trials need the Keras trainable set up in the workers' "
                "strategy scope"
            )
        group = ray.util.get_current_placement_group()
        self.placement_group = group.id.hex() if group is not None else ""
        self.data = Shard(self.data, collectives.rank, collectives.world_size)
        self._wrap_trainable()

    def _wrap_trainable(self) -> None:
        trainable = self.trainable
        train_epoch = trainable.train_epoch

        def train_on_shard(batches: Iterable[Batch]) -> dict[str, float]:
            counted = CountedRows(batches)
            metrics = dict(train_epoch(counted))
            loss_sum, rows = self.collectives.sum(
                [metrics["train_loss"] * counted.rows, counted.rows]
            )
            self._check_replicas_agree()
            return {**metrics, "train_loss": loss_sum / rows}

        trainable.train_epoch = train_on_shard

    def _train_and_evaluate(self, epoch: int) -> dict[str, Any]:
        metrics = super()._train_and_evaluate(epoch)
        metrics[WORKERS] = self.collectives.world_size
        metrics[PLACEMENT_GROUP] = self.placement_group
        # Every rank evaluated alike; rank 0's numbers are the epoch's on every rank, to the bit.
        numeric = sorted(k for k, v in metrics.items() if _is_number(v))
        shared = self.collectives.from_rank_0([float(metrics[k]) for k in numeric])
        for key, value in zip(numeric, shared, strict=True):
            metrics[key] = type(metrics[key])(value) if isinstance(metrics[key], int) else value
        return metrics

    def _check_replicas_agree(self) -> None:
        """Fail the trial on every rank if the ranks' weights drifted apart."""
        checksum = float(sum(float(w.numpy().sum()) for w in self.trainable.model.weights))
        (chief,) = self.collectives.from_rank_0([checksum])
        (drift,) = self.collectives.sum([abs(checksum - chief)])
        if drift > 1e-6 * max(1.0, abs(chief)):
            raise FailedTrialError(
                f"the data-parallel workers' weights differ after an epoch (total drift "
                f"{drift:.6g} from rank 0's checksum {chief:.6g}): their gradients were not "
                "synchronised"
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)
