"""Real data, preprocessed once per sweep and shared by every trial through Ray Data.

The pipeline, one module a step:

1. :mod:`~pipelines.data.sources` loads every row (bundled sets or the user's files) and fails
   loudly on bad data;
2. :mod:`~pipelines.data.preprocess` splits, normalises, tokenises and encodes, deterministically;
3. :mod:`~pipelines.data.cache` keeps that result on disk, keyed by a hash of data and settings,
   so the next sweep on unchanged data skips steps 1 and 2;
4. :mod:`~pipelines.data.sweep_data` materialises the splits in Ray's object store once per
   sweep and streams them to trials, augmenting (:mod:`pipelines.augment`) and featurising
   (:mod:`~pipelines.data.features`) each epoch's training blocks with ``map_batches``.
"""

from __future__ import annotations

import logging
import time

from pipelines.config import DataConfig
from pipelines.data import cache
from pipelines.data.preprocess import Prepared, preprocess
from pipelines.data.sources import (
    DATASET_NAMES,
    RawData,
    check_data_source,
    data_modality,
    dataset_task,
    load_raw,
)
from pipelines.data.stream_sweep import (
    check_streaming,
    check_streaming_trainable,
    prepare_stream,
    streaming_sweep_data,
)
from pipelines.data.streaming import StreamFit, wants_streaming
from pipelines.data.sweep_data import (
    SweepData,
    configure_ray_data,
    to_ray_dataset,
    transform_batch,
)
from pipelines.errors import DataError

__all__ = [
    "DATASET_NAMES",
    "Prepared",
    "RawData",
    "StreamFit",
    "SweepData",
    "check_data_source",
    "check_streaming",
    "check_streaming_trainable",
    "configure_ray_data",
    "data_modality",
    "dataset_task",
    "load_raw",
    "materialise",
    "prepare_arrays",
    "prepare_data",
    "prepare_source",
    "transform_batch",
]

logger = logging.getLogger(__name__)


def prepare_arrays(config: DataConfig) -> tuple[Prepared, bool]:
    """Return the preprocessed splits (from the cache when possible) and whether it was a hit.

    No Ray here: this runs in the driver, once per sweep, before any cluster work, so bad data
    fails first. Every sweep path (sweep, ``--extend``, retrain) calls it exactly once and
    hands the result on; the debug line below is what a test counts.

    Raises:
        DataError: If the data is missing, empty or malformed, or rows went missing.

    """
    logger.debug("preparing data %s", config.dataset)
    key = cache.cache_key(config) if config.cache else None
    if key is not None:
        cached = cache.load(key)
        if cached is not None:
            logger.info("data: reusing preprocessed %s from the cache (%s)", config.dataset, key)
            return cached, True
    started = time.perf_counter()
    raw = load_raw(config)
    prepared = preprocess(raw, config)
    holdout = 0 if prepared.y_holdout is None else len(prepared.y_holdout)
    rows = len(prepared.y_train) + len(prepared.y_val) + holdout
    if rows != len(raw.y):  # rows in == rows out, always
        raise DataError(
            f"preprocessing turned {len(raw.y)} rows into {rows}",
            key="data",
            fix="report this as a bug",
        )
    if key is not None:
        cache.save(key, prepared)
        cache.record_build(key, config, time.perf_counter() - started)
    return prepared, False


def prepare_source(config: DataConfig) -> tuple[Prepared | StreamFit, bool]:
    """Return the in-memory splits (:func:`prepare_arrays`) or, for streamed data, its fit.

    Streamed data (:func:`~pipelines.data.stream_sweep.wants_streaming`) is fitted in one pass
    that holds one row group at a time; nothing else is read before the trials.

    Raises:
        DataError: If the data is missing, empty or malformed, or rows went missing.

    """
    if not wants_streaming(config):
        return prepare_arrays(config)
    started = time.perf_counter()
    fit, cached = prepare_stream(config, dataset_task(config))
    logger.info(
        "data: streaming %s rows of %s (%d row groups), %s in %.1f s",
        f"{fit.listing.rows:,}",
        config.path,
        len(fit.listing.fragments),
        "fit found in the cache" if cached else "fitted",
        time.perf_counter() - started,
    )
    return fit, cached


def prepare_data(config: DataConfig, cpus_per_trial: int = 1) -> SweepData:
    """Load, preprocess (or reuse the cache) and materialise the data once for a whole sweep.

    Raises:
        DataError: If the data is missing, empty or malformed, or rows went missing.

    """
    prepared, hit = prepare_source(config)
    return materialise(
        prepared,
        cache_hit=hit,
        cpus_per_trial=cpus_per_trial,
        augment_device=config.augment_device,
    )


def materialise(
    prepared: Prepared | StreamFit,
    *,
    cache_hit: bool,
    cpus_per_trial: int = 1,
    augment_device: str = "auto",
) -> SweepData:
    """Put prepared splits into Ray's object store once, for every trial of a sweep to share.

    The training split is cut into blocks a trial's ``cpus_per_trial`` CPUs augment in parallel;
    ``augment_device`` (``data.augment_device``) says whether image transforms may run on a
    trial's GPU instead. Streamed data stays where it is: trials read it themselves.

    Raises:
        DataError: If rows went missing on the way into Ray Data.

    """
    configure_ray_data()
    if isinstance(prepared, StreamFit):
        return streaming_sweep_data(prepared, augment_device)
    spec = prepared.spec()
    train = to_ray_dataset(prepared.x_train, prepared.y_train, parallelism=cpus_per_trial)
    val = to_ray_dataset(prepared.x_val, prepared.y_val)
    rows = (train.count(), val.count())
    if rows != (spec.num_train, spec.num_val):  # never lose rows silently
        raise DataError(
            f"expected {spec.num_train}/{spec.num_val} rows in Ray Data, got {rows}",
            key="data",
            fix="report this as a bug",
        )
    return SweepData(
        train,
        val,
        spec,
        prepared.fingerprint(),
        modality=prepared.modality,
        featurizer=prepared.featurizer,
        synonyms=prepared.synonym_table(),
        cache_hit=cache_hit,
        train_blocks=train.num_blocks(),
        augment_device=augment_device,
    )
