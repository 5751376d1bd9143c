"""A sweep's data streamed from Parquet row groups instead of held in Ray's object store.

``data.streaming: true`` (or unset, for a Parquet source above
:data:`~pipelines.data.streaming.STREAM_ABOVE_BYTES`) fits the preprocessing in one pass in the
driver (:func:`~pipelines.data.streaming.fit_stream`) and hands trials a
:class:`StreamingSweepData`: each epoch every trial reads its own stream of row groups, in its
own shuffled order, through zero-CPU tasks pinned to its node, a bounded number at a time; the
validation split is streamed the same way. Nothing but statistics passes through the driver.

What streams today: numeric Parquet columns (a file, or a folder of files), for the torch and
Keras trainables and the user's model builders, classes or regression targets, without a
holdout. What does not yet is refused before any cluster work (exit 2).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.config import DataConfig
from pipelines.data.preprocess import Prepared
from pipelines.data.streaming import (
    StreamFit,
    fit_stream,
    iter_split,
    list_fragments,
    not_streamable,
    stream_fragments,
    unwrapped,
    wants_streaming,
)
from pipelines.data.sweep_data import SweepData
from pipelines.errors import ConfigError
from trainables.protocol import Batch


def check_streaming(config: DataConfig) -> None:
    """Refuse ``data.streaming: true`` for what does not stream yet (before any cluster work).

    Raises:
        ConfigError: Naming the key that stands in the way.

    """
    if not config.streaming:
        return
    reason = not_streamable(config)
    if reason is not None:
        key, rule = reason
        raise ConfigError(
            f"data.streaming: true {rule}",
            key=key,
            fix="set data.streaming: false to load the data into memory",
        )


def check_streaming_trainable(config: DataConfig, batch_framework: str) -> None:
    """Refuse streaming for scikit-learn, whose trees need every row of an epoch at once.

    Raises:
        ConfigError: For a scikit-learn trainable on streamed data.

    """
    if batch_framework == "sklearn" and wants_streaming(config):
        raise ConfigError(
            "scikit-learn trainables gather every row of an epoch in the trial, so streamed "
            "data would have to fit in one trial's memory",
            key="data.streaming",
            fix="set data.streaming: false, or tune a torch or Keras model",
        )


def prepare_stream(config: DataConfig, task: str) -> StreamFit:
    """List and fit a streamed source in one pass (in this process, a row group at a time).

    Raises:
        DataError: For missing, damaged or malformed data, naming file, row group and row.

    """
    assert config.path is not None
    return fit_stream(
        list_fragments(str(config.path)),
        label=config.label_column,
        features=config.feature_columns,
        task=task,
        val_fraction=config.val_fraction,
    )


def sample_prepared(fit: StreamFit, rows: int) -> Prepared:
    """Return the first ``rows`` training rows (and the validation rows beside them) in memory.

    For a dry run's one step: it reads row groups from the start until it has enough.
    """
    train: list[dict[str, np.ndarray]] = []
    val: list[dict[str, np.ndarray]] = []
    for split, pieces in (("train", train), ("val", val)):
        for batch in _local_batches(fit, split):
            pieces.append(batch)
            if sum(len(p["y"]) for p in pieces) >= rows:
                break
    return Prepared(
        x_train=np.concatenate([p["x"] for p in train])[:rows],
        y_train=np.concatenate([p["y"] for p in train])[:rows],
        x_val=np.concatenate([p["x"] for p in val])[:rows],
        y_val=np.concatenate([p["y"] for p in val])[:rows],
        modality="tabular",
        task=fit.task,
        num_classes=len(fit.classes),
        class_names=tuple(str(c) for c in fit.classes),
        input_shape=(len(fit.features),),
        target_mean=fit.target_mean,
        target_std=fit.target_std,
    )


def _local_batches(fit: StreamFit, split: str) -> Iterator[dict[str, np.ndarray]]:
    """Encode row groups in this process, in order (no Ray)."""
    from pipelines.data.streaming import read_fragment

    for fragment in fit.listing.fragments:
        table = read_fragment(fit.listing.source, fragment, (*fit.features, fit.label))
        yield fit.encode(table, fragment, split)


@dataclass(frozen=True)
class StreamingSweepData(SweepData):
    """:class:`~pipelines.data.sweep_data.SweepData` whose splits stream from row groups.

    ``train`` and ``val`` are None: each reader builds its own stream from ``fit``.

    Attributes:
        fit: The source's listing and fitted preprocessing.

    """

    fit: StreamFit | None = None

    @property
    def _fit(self) -> StreamFit:
        assert self.fit is not None
        return self.fit

    def epoch_source(self, *, seed: int, trial: int, epoch: int, cpus: int) -> Any:
        """Return one epoch's row groups, read in a fresh order, before the transform step."""
        return stream_fragments(
            self._fit, "train", order_seed=(seed, trial, epoch), concurrency=cpus
        )

    def checked(self, blocks: Iterator[Batch]) -> Iterator[Batch]:
        """Re-raise a damaged row group met by a Ray Data task as the DataError it was."""
        return unwrapped(blocks)

    def val_batches(self, batch_size: int = 1024) -> Iterator[Batch]:
        """Stream the validation split in row-group order, without augmentation."""
        return iter_split(self._fit, "val", batch_size=batch_size)

    def train_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Gather the whole training split (a training function asked for arrays)."""
        return _gather(iter_split(self._fit, "train"))

    def val_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Gather the whole validation split."""
        return _gather(iter_split(self._fit, "val"))

    def input_example(self, rows: int = 8) -> np.ndarray:
        """Return the first ``rows`` validation inputs, reading no further."""
        for batch in iter_split(self._fit, "val", batch_size=rows):
            return np.asarray(batch["x"])
        return np.zeros((0, len(self._fit.features)), np.float32)


def _gather(batches: Iterator[Batch]) -> tuple[np.ndarray, np.ndarray]:
    pieces = list(batches)
    return np.concatenate([p["x"] for p in pieces]), np.concatenate([p["y"] for p in pieces])


def streaming_sweep_data(fit: StreamFit, augment_device: str = "auto") -> StreamingSweepData:
    """Return the sweep data every trial streams from (no rows are read here)."""
    return StreamingSweepData(
        None,
        None,
        fit.spec(),
        fit.fingerprint(),
        modality="tabular",
        train_blocks=len(fit.listing.fragments),
        augment_device=augment_device,
        fit=fit,
    )
