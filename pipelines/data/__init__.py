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
from pipelines.data.sweep_data import SweepData, to_ray_dataset, transform_batch
from pipelines.errors import DataError

__all__ = [
    "DATASET_NAMES",
    "Prepared",
    "RawData",
    "SweepData",
    "check_data_source",
    "configure_ray_data",
    "data_modality",
    "dataset_task",
    "load_raw",
    "prepare_arrays",
    "prepare_data",
    "transform_batch",
]

logger = logging.getLogger(__name__)


def prepare_arrays(config: DataConfig) -> tuple[Prepared, bool]:
    """Return the preprocessed splits (from the cache when possible) and whether it was a hit.

    No Ray here: this runs in the driver, once per sweep.
    """
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


def prepare_data(config: DataConfig, cpus_per_trial: int = 1) -> SweepData:
    """Load, preprocess (or reuse the cache) and materialise the data once for a whole sweep.

    The training split is cut into blocks a trial's ``cpus_per_trial`` CPUs augment in parallel.

    Raises:
        DataError: If the data is missing, empty or malformed, or rows went missing.

    """
    configure_ray_data()
    prepared, hit = prepare_arrays(config)
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
        cache_hit=hit,
        train_blocks=train.num_blocks(),
    )


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
