"""The prepared splits as Ray datasets, shared by every trial of a sweep.

The driver materialises both splits in Ray's object store once (:func:`to_ray_dataset`); trials
receive a :class:`SweepData` holding references to the blocks, not copies, and stream mini-batches
from it. Per epoch, training blocks go through one ``map_batches`` step that augments them with
the trial's policy and featurises them (:func:`transform_batch`, plain numpy).

When a torch trial trains on a GPU, image augmentation can run there instead
(``data.augment_device``, decided by :func:`pipelines.augment.device.augments_on_device`): the
``map_batches`` step then only shuffles, and each training batch is copied to the device and
augmented there by :mod:`pipelines.augment.image_torch` (:func:`augment_on_device`), so the
trial's few CPUs no longer bound how much augmentation a fast GPU can consume.

Why the ``map_batches`` tasks ask for zero CPUs: a trial already holds the CPUs it was given, and
the augmentation is part of that trial's work. Tasks that asked for a CPU of their own would wait
forever when trials occupy every CPU of the cluster (the classic Tune + Ray Data deadlock); with
zero logical CPUs and a concurrency capped at the trial's CPU count they use the trial's share
instead, so a full cluster never starves its own input pipeline.

Why they are pinned to the trial's node: Ray Data schedules tasks with small inputs "SPREAD",
which escapes the trial's placement group, and a zero-CPU task fits every node. On a three-node
cluster the tasks of CPU-only trials ran on the GPU node and on the head that had no CPUs at
all (tests/e2e/test_multinode.py). Pinned, they spend the CPUs the trial reserved and nobody
else's, and the augmented blocks never cross the network.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.augment.device import augments_on_device, no_cuda_error
from pipelines.augment.policy import AugmentPolicy, apply_policy, policy_from_hparams
from pipelines.data.features import Featurizer
from trainables.protocol import Batch, DataSpec

#: Largest block of the materialised splits. Every block is one ``map_batches`` task per epoch,
#: and a task costs tens of ms here whatever its size (bench/augment_throughput.py: 1,024-row
#: blocks of 28x28 images ran at a third of single-process numpy's speed), so blocks are as few
#: and as large as possible: one per CPU a trial holds, split further only past this size.
MAX_BLOCK_BYTES = 64 * 2**20


def block_count(x: np.ndarray, parallelism: int) -> int:
    """Return how many blocks ``x`` is cut into: a multiple of ``parallelism``, none too big."""
    parallelism = max(1, parallelism)
    rounds = max(1, math.ceil(x.nbytes / (parallelism * MAX_BLOCK_BYTES)))
    return max(1, min(len(x), parallelism * rounds))


#: Random stream id of the row shuffle (augmentation streams are 0..len(TRANSFORMS)-1).
SHUFFLE_STREAM = 1_000
#: Blocks transformed ahead of the trial's consumption (each block is a whole slice of an epoch).
PREFETCH_BLOCKS = 1


def transform_batch(
    batch: dict[str, np.ndarray],
    *,
    policy: AugmentPolicy,
    featurizer: Featurizer,
    seed: int,
    trial: int,
    epoch: int,
    synonyms: Any = None,
    shuffle: bool = False,
) -> dict[str, np.ndarray]:
    """Augment then featurise one block of training rows; labels and row ids pass through.

    With ``shuffle`` the block's rows also come out in a fresh random order each epoch (drawn
    from seed, trial, epoch and the block), every column permuted alike.
    """
    first = int(batch["idx"][0]) if len(batch["idx"]) else 0
    context = {"synonyms": synonyms} if policy.modality == "text" else {}
    x = apply_policy(
        batch["x"], policy, seed=seed, trial=trial, epoch=epoch, first_index=first, **context
    )
    out = {**batch, "x": featurizer(x)}
    if shuffle:
        order = np.random.default_rng([seed, trial, epoch, first, SHUFFLE_STREAM]).permutation(
            len(batch["idx"])
        )
        out = {name: column[order] for name, column in out.items()}
    return out


@dataclass(frozen=True)
class SweepData:
    """What every trial of a sweep reads: materialised splits plus how to transform them.

    Attributes:
        train: Training split (columns ``x``, ``y``, ``idx``), rows as augmentation sees them.
        val: Validation split, already featurised.
        spec: Shapes and task, for building models.
        fingerprint: Content hash of the prepared arrays.
        modality: ``"image"``, ``"tabular"``, ``"text"`` or ``"audio"``.
        featurizer: Turns augmented training rows into model inputs.
        synonyms: The synonym table text augmentation draws from (None for other data).
        cache_hit: Whether preprocessing was skipped because the cache had the result.
        train_blocks: Blocks of the training split (at most this many tasks run at once).
        augment_device: ``data.augment_device``: where image augmentation runs (``"auto"``,
            ``"cpu"`` or ``"gpu"``, see :mod:`pipelines.augment.device`).

    """

    train: Any
    val: Any
    spec: DataSpec
    fingerprint: str
    modality: str = "image"
    featurizer: Featurizer = field(default_factory=Featurizer)
    synonyms: Any = None
    cache_hit: bool = False
    train_blocks: int = 1
    augment_device: str = "auto"

    def for_trial(
        self,
        hparams: Mapping[str, Any],
        *,
        trial: int,
        cpus: int,
        device: str = "cpu",
        framework: str | None = None,
    ) -> TrialStream:
        """Return one trial's batches (the :class:`~trainables.protocol.BatchSource` contract).

        Runs in the trial's process: Ray Data is configured there, and the trial's augmentation
        policy is resolved from its ``aug_*`` hyperparameters.

        Args:
            hparams: The trial's hyperparameters (``seed`` and ``aug_*`` are read).
            trial: The trial's index in the sweep.
            cpus: CPUs the trial holds.
            device: The device the trial trains on (``"cpu"``, ``"cuda"``).
            framework: The trial's trainable framework; image augmentation runs on ``device``
                only for ``"torch"`` (see :func:`~pipelines.augment.device.augments_on_device`).

        Raises:
            ConfigError: For an augmentation hyperparameter the data cannot use, or
                ``data.augment_device: gpu`` where the trial cannot augment on a GPU.

        """
        configure_ray_data()
        policy = policy_from_hparams(hparams, self.modality)
        on_device = augments_on_device(self.augment_device, device, framework)
        if on_device and not _cuda_usable():
            if self.augment_device == "gpu":
                raise no_cuda_error(f"{device}, which this process cannot use")
            on_device = False  # "auto": the trainable falls back to the CPU, so does augmentation
        # Only image transforms have a device version; text and audio stay in numpy.
        augment_on = device if on_device and self.modality == "image" else None
        seed = int(hparams.get("seed", 0))
        return TrialStream(self, policy, seed, trial, cpus, augment_on=augment_on)

    def train_batches(
        self,
        *,
        batch_size: int,
        epoch: int,
        seed: int,
        policy: AugmentPolicy,
        cpus: int,
        trial: int = 0,
        share: RankShare | None = None,
    ) -> Iterator[Batch]:
        """Stream one epoch of shuffled, freshly augmented training batches of ``batch_size``.

        With ``share`` (:meth:`rank_share`), only a data-parallel rank's part of the epoch.
        """
        import ray.data

        # Shuffling happens in the map_batches tasks, in parallel and vectorised: a fresh block
        # order and a fresh row order inside each block every epoch. Ray Data's local shuffle
        # buffer would do the same work row by row in the trial's own thread.
        source = self.epoch_source(
            seed=seed,
            trial=trial,
            epoch=epoch,
            cpus=cpus,
            only=None if share is None else share[0],
        )
        dataset = source.map_batches(
            transform_batch,
            fn_kwargs={
                "policy": policy,
                "featurizer": self.featurizer,
                "seed": seed,
                "trial": trial,
                "epoch": epoch,
                "synonyms": self.synonyms,
                "shuffle": True,
            },
            batch_format="numpy",
            batch_size=None,  # one block per call: the fewest tasks per epoch
            zero_copy_batch=True,  # transform_batch never writes to its input
            num_cpus=0,  # use the trial's CPUs (see the module docstring)
            label_selector=on_this_node(),
            compute=ray.data.TaskPoolStrategy(size=max(1, min(cpus, self.train_blocks))),
        )
        blocks = dataset.iter_batches(
            batch_size=None, batch_format="numpy", prefetch_batches=PREFETCH_BLOCKS
        )
        batches = rebatch(self.checked(blocks), batch_size)
        return batches if share is None else first_batches(batches, share[1])

    def epoch_source(
        self, *, seed: int, trial: int, epoch: int, cpus: int, only: list[int] | None = None
    ) -> Any:
        """Return one epoch's training blocks, in a fresh order, before the transform step.

        ``only`` (a rank's fragments of a streamed source) is never given here: see
        :meth:`rank_share`.
        """
        return self.train.randomize_block_order(seed=_mix(seed, trial, epoch))

    def rank_share(
        self, *, seed: int, trial: int, epoch: int, rank: int, world: int, batch_size: int
    ) -> RankShare | None:
        """Return a data-parallel rank's own part of an epoch, or None to shard whole batches.

        In memory, every rank reads the whole epoch and keeps every ``world``-th batch: blocks
        in the object store cost little to read twice. A streamed source overrides this.
        """
        return None

    def checked(self, blocks: Iterator[Batch]) -> Iterator[Batch]:
        """Pass the transformed blocks on (a source that can fault mid-stream checks here)."""
        return blocks

    def val_batches(self, batch_size: int = 1024) -> Iterator[Batch]:
        """Stream the validation split in order, without augmentation."""
        return self.val.iter_batches(  # type: ignore[no-any-return]
            batch_size=batch_size, batch_format="numpy"
        )

    def input_example(self, rows: int = 8) -> np.ndarray:
        """Return the first ``rows`` validation inputs (a registered model's example)."""
        return self.val_arrays()[0][:rows]

    def train_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the whole training split as model inputs, in order, without augmentation."""
        blocks = list(self.train.iter_batches(batch_size=None, batch_format="numpy"))
        if not blocks:
            return np.empty((0,)), np.empty((0,))
        x = np.concatenate([self.featurizer(np.asarray(b["x"])) for b in blocks])
        return x, np.concatenate([np.asarray(b["y"]) for b in blocks])

    def val_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the whole validation split as arrays (for scoring a registered model)."""
        batches = list(self.val_batches())
        return np.concatenate([b["x"] for b in batches]), np.concatenate([b["y"] for b in batches])


@dataclass(frozen=True)
class TrialStream:
    """One trial's view of a :class:`SweepData`: its policy, seed, index and CPUs bound.

    Attributes:
        data: The sweep's data.
        policy: The trial's augmentation policy.
        seed: The trial's seed.
        trial: The trial's index in the sweep.
        cpus: CPUs the trial holds.
        augment_on: The torch device the image augmentation runs on, batch by batch (training
            batches' ``x`` then arrive there as tensors); None: numpy, in the Ray Data tasks.

    """

    data: SweepData
    policy: AugmentPolicy
    seed: int
    trial: int
    cpus: int
    augment_on: str | None = None

    def train_batches(self, epoch: int, batch_size: int) -> Iterator[Batch]:
        """Stream one epoch of the trial's shuffled, freshly augmented training batches."""
        return self._train_batches(epoch, batch_size, None)

    def rank_batches(
        self, epoch: int, batch_size: int, rank: int, world: int
    ) -> Iterator[Batch] | None:
        """Stream a data-parallel rank's own part of the epoch, as many batches on every rank.

        None where the data has no such parts (see :meth:`SweepData.rank_share`): the rank
        then keeps every ``world``-th batch of the whole epoch.
        """
        share = self.data.rank_share(
            seed=self.seed,
            trial=self.trial,
            epoch=epoch,
            rank=rank,
            world=world,
            batch_size=batch_size,
        )
        return None if share is None else self._train_batches(epoch, batch_size, share)

    def _train_batches(
        self, epoch: int, batch_size: int, share: RankShare | None
    ) -> Iterator[Batch]:
        device = None if self.policy.is_identity else self.augment_on
        batches = self.data.train_batches(
            batch_size=batch_size,
            epoch=epoch,
            seed=self.seed,
            # On the device the Ray Data step skips augmentation and only shuffles.
            policy=self.policy if device is None else AugmentPolicy(self.policy.modality),
            cpus=self.cpus,
            trial=self.trial,
            share=share,
        )
        if device is None:
            return batches
        return augment_on_device(
            batches,
            self.policy,
            device=device,
            seed=self.seed,
            trial=self.trial,
            epoch=epoch,
        )

    def val_batches(self) -> Iterator[Batch]:
        """Stream the validation split in order, without augmentation."""
        return self.data.val_batches()

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return both splits whole, in order, featurised and without augmentation."""
        return (*self.data.train_arrays(), *self.data.val_arrays())


def augment_on_device(
    batches: Iterable[Batch],
    policy: AugmentPolicy,
    *,
    device: str,
    seed: int,
    trial: int,
    epoch: int,
) -> Iterator[Batch]:
    """Copy each batch's ``x`` to ``device`` as a tensor and apply the image ``policy`` there.

    The other columns stay numpy. Each batch's random streams are named by the position of its
    first row in the epoch (``first_index``), so an epoch is a function of seed, trial and
    epoch (and the batch size) as on the numpy path, whatever the device. Images only: their
    featurizer is the identity, so augmenting after the Ray Data step changes nothing else.
    """
    from pipelines.augment.image_torch import apply_image_policy, to_device

    offset = 0
    for batch in batches:
        rows = len(batch["x"])
        x = apply_image_policy(
            to_device(batch["x"], device),
            policy,
            seed=seed,
            trial=trial,
            epoch=epoch,
            first_index=offset,
        )
        offset += rows
        out: dict[str, Any] = dict(batch)
        out["x"] = x
        yield out


def _cuda_usable() -> bool:
    from pipelines.augment.image_torch import cuda_usable

    return cuda_usable()


#: A data-parallel rank's part of an epoch: its fragments, and how many batches each rank takes.
RankShare = tuple[list[int], int]


def first_batches(batches: Iterator[Batch], count: int) -> Iterator[Batch]:
    """Yield the first ``count`` batches, then close the stream (its Ray Data reads stop)."""
    try:
        for taken, batch in enumerate(batches):
            if taken == count:
                return
            yield batch
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def rebatch(blocks: Iterable[Batch], batch_size: int) -> Iterator[Batch]:
    """Cut a stream of blocks into batches of exactly ``batch_size`` rows (the last may be short).

    Slicing whole blocks here costs a view per batch; Ray Data's own batching costs ~0.6 ms per
    batch, which at 128 rows halved the pipeline's throughput (bench/augment_throughput.py).
    Rows left over at the end of a block are joined with the head of the next one.
    """
    pending: list[Batch] = []  # pieces of the next batch, from the ends of earlier blocks
    pending_rows = 0
    for block in blocks:
        columns = {name: np.asarray(values) for name, values in block.items()}
        rows, start = len(columns["x"]), 0
        if pending_rows:
            start = min(batch_size - pending_rows, rows)
            pending.append(_rows(columns, 0, start))
            pending_rows += start
            if pending_rows < batch_size:
                continue
            yield _concat(pending)
            pending, pending_rows = [], 0
        while start + batch_size <= rows:
            yield _rows(columns, start, start + batch_size)
            start += batch_size
        if start < rows:
            pending, pending_rows = [_rows(columns, start, rows)], rows - start
    if pending_rows:
        yield _concat(pending)


def _rows(columns: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {name: values[start:stop] for name, values in columns.items()}


def _concat(pieces: list[Batch]) -> dict[str, np.ndarray]:
    if len(pieces) == 1:
        return dict(pieces[0])
    return {name: np.concatenate([piece[name] for piece in pieces]) for name in pieces[0]}


def on_this_node() -> dict[str, str]:
    """Return the label selector that keeps Ray tasks on this process's node.

    A hard constraint: a task fails rather than run elsewhere, since the trial's node is the
    one whose CPUs the trial holds. (Ray's node-id label is its replacement for a hard node
    affinity, and Ray Data takes a label selector by name.)
    """
    import ray

    return {NODE_ID_LABEL: ray.get_runtime_context().get_node_id()}


#: The label every Ray node carries with its own id.
NODE_ID_LABEL = "ray.io/node-id"


def _mix(seed: int, trial: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, trial, epoch]).generate_state(1)[0])


def to_ray_dataset(x: np.ndarray, y: np.ndarray, parallelism: int = 1) -> Any:
    """Materialise arrays as a Ray dataset of a few large blocks (columns x, y, idx).

    Args:
        x: Rows.
        y: Labels or targets.
        parallelism: CPUs that will transform the blocks at once (a trial's CPUs).

    """
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    blocks = block_count(x, parallelism)
    step = max(1, math.ceil(len(x) / blocks))  # equal blocks, so concurrent tasks finish together
    tables = [
        pa.table(
            {
                "x": ArrowTensorArray.from_numpy(x[start : start + step]),
                "y": y[start : start + step],
                "idx": np.arange(start, min(start + step, len(x))),
            }
        )
        for start in range(0, len(x), step)
    ]
    return ray.data.from_arrow(tables).materialize()


def configure_ray_data() -> None:
    """Keep Ray Data strict, deterministic and quiet (in the driver and in every trial).

    No errored block is ever skipped, blocks come out in their input order (so an epoch is a
    function of seed, trial and epoch, and ``tunepipe replay`` can reproduce it), and no progress
    bars or per-epoch INFO lines.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    # Ray Data can skip blocks that fail to read; we never want rows to vanish silently.
    context.max_errored_blocks = 0
    # With concurrent tasks, finished blocks would otherwise come out in completion order.
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # Per-epoch dataset runs and per-epoch checkpoints each log an INFO line from every trial.
    for name in ("ray.data", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # It warns once per process that we turned the bars off, which we know.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    # "no available CPUs, the Dataset job will hang": not for our zero-CPU map_batches tasks,
    # which run on the trial's own CPUs (see pipelines.data.sweep_data).
    logging.getLogger("ray.data.dataset").setLevel(logging.ERROR)
