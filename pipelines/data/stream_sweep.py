"""A sweep's data streamed in fragments instead of held in Ray's object store.

``data.streaming: true`` (or unset, for a Parquet source above
:data:`~pipelines.data.streaming.STREAM_ABOVE_BYTES`) fits the preprocessing in one pass in the
driver (:func:`~pipelines.data.streaming.fit_stream`) and hands trials a
:class:`StreamingSweepData`: each epoch every trial reads its own stream of row groups, in its
own shuffled order, through zero-CPU tasks pinned to its node, a bounded number at a time; the
validation split is streamed the same way. Nothing but statistics passes through the driver.

What streams today: numeric Parquet and CSV columns (:mod:`pipelines.data.csv_files`), a text
column of either (its vocabulary fitted in the same pass:
:func:`~pipelines.data.streaming.fit_texts`), npz shards (:mod:`pipelines.data.npz_shards`) and
image folders (:mod:`pipelines.data.image_files`), augmented per epoch as in memory, from a
file, a folder of files, or a URI in an object store (``data.endpoint`` and ``data.region``
as for ``storage``), for the torch and Keras trainables and the user's model builders, classes
or regression targets; a holdout (``data.holdout_fraction``, a retrain's) is set aside by
its own hash and read only by :func:`holdout_batches`.
What does not yet is refused before any cluster work (exit 2), as are data URIs with
credentials in them or with ``data.streaming: false``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pipelines.config import DataConfig
from pipelines.data.preprocess import Prepared
from pipelines.data.stream_cache import fit_key, load_fit, row_cache_folder, save_fit
from pipelines.data.streaming import (
    StreamFit,
    fit_images,
    fit_stream,
    fit_texts,
    iter_split,
    label_of,
    listing_of,
    not_streamable,
    rank_share,
    read_encoded,
    stream_fragments,
    unwrapped,
    wants_streaming,
)
from pipelines.data.sweep_data import RankShare, SweepData
from pipelines.errors import ConfigError
from pipelines.uris import redact, refuse_credentials
from trainables.protocol import Batch


def check_streaming(config: DataConfig) -> None:
    """Refuse what does not stream yet, and bad data URIs (before any cluster work, no I/O).

    Raises:
        ConfigError: Naming the key that stands in the way.

    """
    if config.endpoint is not None and not str(config.path).startswith("s3://"):
        raise ConfigError(
            "data.endpoint is only for s3:// data",
            key="data.endpoint",
            fix="remove it, or make data.path an s3:// URI",
        )
    if config.is_remote:
        _check_data_uri(config)
    elif not config.streaming:
        return
    reason = not_streamable(config)
    if reason is not None:
        key, rule = reason
        said = "data.streaming: true" if config.streaming else "data.path in an object store"
        raise ConfigError(
            f"{said} {rule}",
            key=key,
            fix="copy the data to a local path and set data.streaming: false to load it "
            "into memory"
            if config.is_remote
            else "set data.streaming: false to load the data into memory",
        )


def _check_data_uri(config: DataConfig) -> None:
    """Refuse a data URI with credentials in it, one pyarrow cannot open, or one not streamed."""
    uri = str(config.path)
    refuse_credentials(uri, "data.path")
    if config.streaming is False:
        raise ConfigError(
            "data in an object store is streamed, never loaded into memory",
            key="data.streaming",
            fix="remove data.streaming (or set it to true), or copy the data to a local path",
        )
    import pyarrow
    import pyarrow.fs

    try:
        pyarrow.fs.FileSystem.from_uri(config.source())
    except (pyarrow.ArrowInvalid, ValueError, OSError) as exc:
        raise ConfigError(
            f"data.path {redact(uri)!r} is not a URI pyarrow can open: {exc}",
            key="data.path",
            fix="use s3://bucket/prefix (with data.endpoint for an S3-compatible store), "
            "gs://bucket/prefix, or a local path",
        ) from None


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


def prepare_stream(config: DataConfig, task: str) -> tuple[StreamFit, bool]:
    """List and fit a streamed source in one pass (in this process, a row group at a time).

    With ``data.cache`` on, a fit of the same listing and settings is reused instead (the
    second item says so), and trials keep the row groups they encode on their nodes' disks
    (:mod:`pipelines.data.stream_cache`).

    Raises:
        DataError: For missing, damaged or malformed data, naming file, row group and row.

    """
    listing = listing_of(config)
    # What the fit depends on besides the listing: its key, and the fitting function's arguments.
    settings: dict[str, Any]
    if config.dataset == "image_folder":
        settings = {"image_size": config.image_size, "val_fraction": config.val_fraction}
    elif config.text_column:
        settings = {
            "text": config.text_column,
            "label": label_of(config),
            "task": task,
            "val_fraction": config.val_fraction,
            "max_tokens": config.max_tokens,
        }
    else:
        settings = {
            "label": label_of(config),
            "features": config.feature_columns,
            "task": task,
            "val_fraction": config.val_fraction,
        }
    settings["holdout_fraction"] = config.holdout_fraction
    key = fit_key(listing.fingerprint(), settings)
    cached = load_fit(key) if config.cache else None
    if cached is not None:
        fit = StreamFit.from_fields(listing, cached)
    elif config.dataset == "image_folder":
        fit = fit_images(listing, **settings)
    elif config.text_column:
        fit = fit_texts(listing, **settings)
    else:
        fit = fit_stream(listing, **settings)
    if not config.cache:
        return fit, False
    if cached is None:
        save_fit(key, fit.fields())
    return replace(fit, row_cache=row_cache_folder(fit.fingerprint())), cached is not None


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
        x_val=fit.featurizer(np.concatenate([p["x"] for p in val])[:rows]),
        y_val=np.concatenate([p["y"] for p in val])[:rows],
        modality=fit.modality,
        task=fit.task,
        num_classes=len(fit.classes),
        class_names=tuple(str(c) for c in fit.classes),
        input_shape=fit.spec().input_shape,
        featurizer=fit.featurizer,
        target_mean=fit.target_mean,
        target_std=fit.target_std,
        synonym_ids=None if fit.synonyms is None else fit.synonyms.ids,
        synonym_counts=None if fit.synonyms is None else fit.synonyms.counts,
        vocab=fit.vocab,
    )


def _local_batches(fit: StreamFit, split: str) -> Iterator[dict[str, np.ndarray]]:
    """Encode row groups in this process, in order (no Ray)."""
    for fragment in fit.listing.fragments:
        yield read_encoded(fit, fragment, split)


def holdout_batches(fit: StreamFit) -> Iterator[Batch]:
    """Stream the holdout split in this process, a fragment at a time, as model inputs.

    For judging retrained models: read in order with no Ray task, holding one fragment's rows.
    """
    for rows in _local_batches(fit, "holdout"):
        if len(rows["y"]):
            yield {"x": fit.featurizer(rows["x"]), "y": rows["y"]}


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

    def epoch_source(
        self, *, seed: int, trial: int, epoch: int, cpus: int, only: list[int] | None = None
    ) -> Any:
        """Return one epoch's row groups, read in a fresh order, before the transform step."""
        return stream_fragments(
            self._fit, "train", order_seed=(seed, trial, epoch), concurrency=cpus, only=only
        )

    def rank_share(
        self, *, seed: int, trial: int, epoch: int, rank: int, world: int, batch_size: int
    ) -> RankShare | None:
        """Deal the epoch's row groups to the ranks: each reads and augments its own only."""
        return rank_share(self._fit, (seed, trial, epoch), rank, world, batch_size)

    def checked(self, blocks: Iterator[Batch]) -> Iterator[Batch]:
        """Re-raise a damaged row group met by a Ray Data task as the DataError it was."""
        return unwrapped(blocks)

    def val_batches(self, batch_size: int = 1024) -> Iterator[Batch]:
        """Stream the validation split in row-group order, without augmentation."""
        return iter_split(self._fit, "val", batch_size=batch_size)

    def train_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Gather the whole training split, featurised (a training function asked for arrays)."""
        x, y = _gather(iter_split(self._fit, "train"))
        return self._fit.featurizer(x), y

    def val_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Gather the whole validation split."""
        return _gather(iter_split(self._fit, "val"))

    def input_example(self, rows: int = 8) -> np.ndarray:
        """Return the first ``rows`` validation inputs, reading no further."""
        for batch in iter_split(self._fit, "val", batch_size=rows):
            return np.asarray(batch["x"])
        return np.zeros((0, *self._fit.spec().input_shape), np.float32)


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
        modality=fit.modality,
        featurizer=fit.featurizer,
        synonyms=fit.synonyms,
        train_blocks=len(fit.listing.fragments),
        augment_device=augment_device,
        fit=fit,
    )
