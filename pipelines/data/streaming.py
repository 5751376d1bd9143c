"""Data read in pieces: the foundation of sweeps on data larger than memory.

The unit of work is a :class:`Fragment`: one row group of a Parquet file, one range of whole
lines of a CSV file (:mod:`pipelines.data.csv_files`), one npz shard
(:mod:`pipelines.data.npz_shards`) or one chunk of an image folder's files
(:mod:`pipelines.data.image_files`, fitted by :func:`fit_images`); see
:mod:`pipelines.data.fragments`. The driver lists the fragments once from the files' footers
(no data read; CSV files are read once to count their lines), fits the preprocessing in one
pass that holds one fragment at a time (:func:`fit_stream`), and every reader afterwards streams
fragments (:func:`stream_fragments`): a Ray dataset whose items are fragments and whose
``map_batches`` tasks read, split and encode them.

Why fragments and not ``ray.data.read_parquet``: Ray Data's file listing step asks for a whole
CPU, whatever the read is given, so a read started inside a trial that holds every CPU of its
node waits forever (measured: a one-CPU Ray, an actor holding the CPU, ``read_parquet`` with
``num_cpus=0`` never returned). Fragment tasks ask for zero CPUs and run on the reader's own
node, on the CPUs the trial holds (see :mod:`pipelines.data.sweep_data`), and a fault names the
file and the row group it is in.

Split assignment needs no global view: a row goes to the validation split when a stable hash of
its features (their float32 bytes; a text's UTF-8 bytes; an image file's bytes) falls below
``data.val_fraction``. The same row lands in the
same split on every machine, in every run and whatever the file order, and duplicated rows
share a split, so a copy of a validation row never trains the model.

The fingerprint reads no data either: each file's path, size and modification time (the ETag's
stand-in on object stores, whose listing gives both), so a 100 GB folder is fingerprinted from
its listing. A file rewritten with the same size within the same nanosecond goes unseen.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

from pipelines.config import DataConfig
from pipelines.data import csv_files, image_files, npz_shards
from pipelines.data.features import Featurizer
from pipelines.data.fragments import Fragment, Listing, filesystem_of
from pipelines.data.row_hashes import SPLIT_KEY, digest64, in_holdout
from pipelines.errors import DataError
from trainables.protocol import DataSpec

#: Multipliers of the row hash (splitmix64's): every bit of every feature reaches every bit of
#: the result, so fractions of rows, not of feature values, decide the split.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


#: The streamed sources (``data.dataset``) and the suffix of their files (any image's for
#: ``image_folder``, see :mod:`pipelines.data.image_files`).
STREAMED_SUFFIX = {"parquet": ".parquet", "npz": ".npz", "csv": ".csv", "image_folder": ""}

#: Parquet sources larger than this (bytes as stored) stream unless ``data.streaming`` says
#: otherwise: a sweep then holds no copy of them in the object store or in the driver.
STREAM_ABOVE_BYTES = 1 << 30


def not_streamable(config: DataConfig) -> tuple[str, str] | None:
    """Return the key and rule that keep ``config``'s data from streaming yet, or None."""
    if config.dataset not in STREAMED_SUFFIX:
        return "data.dataset", (
            f"reads Parquet, CSV, npz shards and image folders only, not {config.dataset!r}"
        )
    if config.text_column and config.dataset not in ("parquet", "csv"):
        return "data.text_column", "streams text from Parquet and CSV columns only"
    if config.dataset == "image_folder":
        kind = "image"
    else:
        kind = "text" if config.text_column else "tabular"
    if config.modality not in ("auto", kind):
        return "data.modality", f"this source streams as {kind} data, not {config.modality}"
    return None


def wants_streaming(config: DataConfig) -> bool:
    """Whether the sweep streams its data: ``data.streaming``, or by size when unset."""
    if config.streaming is not None:
        return config.streaming
    if config.is_remote:
        return True  # only the streaming reader opens object stores
    if not_streamable(config) is not None or config.path is None:
        return False
    if config.dataset in ("npz", "csv") and config.local_path().is_dir():
        return True  # the in-memory reader takes one file, not a folder of them
    return listing_of(config).size_bytes > STREAM_ABOVE_BYTES


def listing_of(config: DataConfig) -> Listing:
    """List ``config``'s streamed source: row groups, CSV ranges, npz shards or image chunks."""
    if config.dataset == "image_folder":
        return image_files.list_images(config.source(), config.image_size)
    return list_fragments(config.source(), suffix=STREAMED_SUFFIX[config.dataset])


def label_of(config: DataConfig) -> str:
    """Return the label column of ``config``'s streamed source (always ``y`` for npz)."""
    return npz_shards.LABEL if config.dataset == "npz" else config.label_column


def first_file_labels(config: DataConfig) -> np.ndarray:
    """Return the label column of the first file only (what decides ``task: auto``)."""
    listing = listing_of(config)
    first = [f for f in listing.fragments if f.path == listing.files[0][0]]
    tables = [read_fragment(listing.source, f, (label_of(config),)) for f in first]
    return np.concatenate([np.asarray(t.column(0).to_numpy(zero_copy_only=False)) for t in tables])


def list_fragments(source: str, suffix: str = ".parquet") -> Listing:
    """List a Parquet file or folder (``*.parquet`` at any depth) and its row groups.

    With ``suffix=".npz"``, a shard or folder of npz shards instead: one fragment a shard
    (see :mod:`pipelines.data.npz_shards`).

    Raises:
        DataError: If nothing is there, no file has the suffix, or a footer (a shard's
            headers) cannot be read.

    """
    import pyarrow.fs

    fs, root = filesystem_of(source)
    info = fs.get_file_info(root)
    if info.type == pyarrow.fs.FileType.NotFound:
        raise DataError(f"data not found: {source}", key="data.path", fix="point at Parquet data")
    if info.type == pyarrow.fs.FileType.Directory:
        found = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
        infos = [
            f for f in found if f.type == pyarrow.fs.FileType.File and f.path.endswith(suffix)
        ]
    else:
        infos = [info]
    if not infos:
        raise DataError(f"{source} holds no {suffix} files", key="data.path", fix="add data")
    files, fragments, first_row = [], [], 0
    columns: tuple[str, ...] = ()
    for file in sorted(infos, key=lambda f: f.path):
        stamp = (source, file.path, int(file.size), int(file.mtime_ns or 0))
        if stamp not in _FOOTERS:
            if len(_FOOTERS) >= _FOOTERS_KEPT:
                _FOOTERS.clear()
            _FOOTERS[stamp] = _read_footer(fs, file.path)
        names, spans = _FOOTERS[stamp]
        columns = columns or names
        files.append(stamp[1:])
        for group, (offset, length, rows) in enumerate(spans):
            fragments.append(Fragment(file.path, group, rows, first_row, offset, length))
            first_row += rows
    return Listing(source, tuple(files), tuple(fragments), columns)


#: Footers already read by this process, by (source, path, size, mtime): a sweep lists its
#: source up to three times (the size check, the fit, ``task: auto``), and on an object store
#: each footer is a request. The key is the fingerprint's, so a rewritten file is read again.
_FOOTERS: dict[tuple[str, str, int, int], tuple[tuple[str, ...], list[csv_files.Span]]] = {}
_FOOTERS_KEPT = 100_000


def _read_footer(fs: Any, path: str) -> tuple[tuple[str, ...], list[csv_files.Span]]:
    """Return a file's column names and each fragment's ``(offset, length, rows)``.

    Offsets and lengths are bytes for CSV ranges, ``(0, -1)`` for row groups and shards.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with fs.open_input_file(path) as handle:
            if path.endswith(".npz"):
                names, rows = npz_shards.shard_header(handle, path)
                return names, [(0, -1, rows)]
            if path.endswith(".csv"):
                return csv_files.csv_layout(handle, path, CSV_RANGE_BYTES)
            metadata = pq.ParquetFile(handle).metadata
    except (pa.ArrowException, OSError) as exc:
        raise _damaged(path, None, exc) from None
    groups = range(metadata.num_row_groups)
    return tuple(metadata.schema.names), [(0, -1, metadata.row_group(g).num_rows) for g in groups]


#: The least bytes of a CSV fragment (a module attribute, so tests can cut small files).
CSV_RANGE_BYTES = csv_files.RANGE_BYTES


def read_fragment(source: str, fragment: Fragment, columns: Sequence[str]) -> Any:
    """Read one fragment's ``columns`` as an Arrow table.

    Raises:
        DataError: Naming the file and row group, if they cannot be read, hold another number
            of rows than the footer says, or lack a column.

    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, _ = filesystem_of(source)
    if fragment.path.endswith((".npz", ".csv")):
        try:
            with fs.open_input_file(fragment.path) as handle:
                if fragment.path.endswith(".npz"):
                    table = npz_shards.read_shard(handle, fragment.path, tuple(columns))
                else:
                    table = csv_files.read_csv_range(
                        handle, fragment.path, tuple(columns), fragment.offset, fragment.length
                    )
        except (pa.ArrowException, OSError) as exc:
            raise _damaged(fragment.path, None, exc) from None
        return _checked_rows(table, fragment)
    try:
        with fs.open_input_file(fragment.path) as handle:
            # pre_buffer coalesces the row group's column chunks into a few large reads.
            parquet = pq.ParquetFile(handle, pre_buffer=True)
            names = set(parquet.schema_arrow.names)  # a property that rebuilds the schema
            missing = [name for name in columns if name not in names]
            if missing:
                raise DataError(
                    f"{fragment.path} has no column {missing[0]!r}",
                    key="data.label_column" if len(columns) == 1 else "data.feature_columns",
                    fix="give every file the same columns",
                )
            table = parquet.read_row_group(fragment.row_group, columns=list(columns))
    except (pa.ArrowException, OSError) as exc:
        raise _damaged(fragment.path, fragment.row_group, exc) from None
    return _checked_rows(table, fragment)


def _checked_rows(table: Any, fragment: Fragment) -> Any:
    if table.num_rows == fragment.rows:
        return table
    if fragment.path.endswith(".csv"):
        end = fragment.offset + fragment.length
        raise DataError(
            f"{fragment.path}, bytes {fragment.offset}-{end}: parsed {table.num_rows} records "
            f"from {fragment.rows} lines",
            key="data.path",
            fix="remove blank lines and line breaks inside quoted values (a streamed CSV holds "
            "one record a line)",
        )
    raise DataError(
        f"{fragment.path}, row group {fragment.row_group}: read {table.num_rows} rows, "
        f"the footer says {fragment.rows}",
        key="data.path",
        fix="restore an intact copy of the file",
    )


def _damaged(path: str, row_group: int | None, exc: BaseException) -> DataError:
    where = path if row_group is None else f"{path}, row group {row_group}"
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return DataError(
        f"cannot read {where}: {detail}",
        key="data.path",
        fix="restore an intact copy of the file; no rows are skipped silently",
    )


def row_hash(x: np.ndarray) -> np.ndarray:
    """Return a 64-bit hash of each row's float32 feature bytes (stable across machines)."""
    words = np.ascontiguousarray(x, dtype="<f4").reshape(len(x), -1).view("<u4")
    h = np.full(len(x), _GOLDEN, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in words.T:
            h = _mix(h ^ column.astype(np.uint64))
    return h


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (uint64 arithmetic wraps, as the algorithm wants)."""
    h = h + _GOLDEN
    h = (h ^ (h >> np.uint64(30))) * _MIX1
    h = (h ^ (h >> np.uint64(27))) * _MIX2
    mixed: np.ndarray = h ^ (h >> np.uint64(31))
    return mixed


def assign_rows(
    split_hashes: np.ndarray,
    holdout_hashes: np.ndarray,
    val_fraction: float,
    holdout_fraction: float = 0.0,
) -> dict[str, np.ndarray]:
    """Return which rows are in each split: ``holdout`` first, then ``val`` among the rest.

    The holdout is decided by its own hash (:mod:`pipelines.data.row_hashes`, the in-memory
    rule), validation rows by the split hash among the rows left, and the rest train.
    """
    holdout = in_holdout(holdout_hashes, holdout_fraction)
    val = in_validation(split_hashes, val_fraction) & ~holdout
    return {"train": ~val & ~holdout, "val": val, "holdout": holdout}


def holdout_hashes(x: np.ndarray, holdout_fraction: float) -> np.ndarray:
    """Return the holdout hash of each row of features (zeros when there is no holdout)."""
    if holdout_fraction <= 0:
        return np.zeros(len(x), dtype=np.uint64)
    rows = np.ascontiguousarray(x, dtype=np.float32)  # what the in-memory tables hash
    return np.asarray([digest64(row.tobytes()) for row in rows], dtype=np.uint64)


def text_hashes(texts: Sequence[str], key: bytes = SPLIT_KEY) -> np.ndarray:
    """Return a 64-bit hash of each text's UTF-8 bytes (keyed: the split's; unkeyed: holdout)."""
    return np.asarray([digest64(t.encode("utf-8"), key) for t in texts], dtype=np.uint64)


def _text_holdout(texts: Sequence[str], holdout_fraction: float) -> np.ndarray:
    """Return each text's holdout hash (unkeyed, as in memory); zeros without a holdout."""
    if holdout_fraction <= 0:
        return np.zeros(len(texts), dtype=np.uint64)
    return text_hashes(texts, key=b"")


def in_validation(hashes: np.ndarray, val_fraction: float) -> np.ndarray:
    """Return which rows belong to the validation split (hash below the fraction)."""
    unit = (hashes >> np.uint64(11)).astype(np.float64) * 2.0**-53  # uniform in [0, 1)
    return unit < val_fraction


@dataclass
class Moments:
    """Count, mean and sum of squared deviations, merged batch by batch (Chan et al.)."""

    count: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, values: np.ndarray) -> None:
        """Fold the rows of ``values`` (N, ...) in, per column."""
        if len(values) == 0:
            return
        values = values.astype(np.float64)
        n, mean = len(values), values.mean(axis=0)
        self.merge(n, mean, ((values - mean) ** 2).sum(axis=0))

    def add_all(self, values: np.ndarray) -> None:
        """Fold every value of ``values`` into one statistic (as images share one)."""
        if values.size == 0:
            return
        mean = values.mean(dtype=np.float64)
        m2 = np.square(values - np.float32(mean), dtype=np.float64).sum()
        self.merge(int(values.size), np.asarray([mean]), np.asarray([m2]))

    def merge(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        """Fold in ``n`` values of mean ``mean`` and squared deviations ``m2``."""
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation, 1 where a column is constant."""
        std = np.sqrt(self.m2 / max(1, self.count))
        return np.where(std > 0, std, 1.0)


@dataclass(frozen=True)
class StreamFit:
    """What one pass over a source learned: split sizes, statistics and labels.

    Attributes:
        listing: The source's files and fragments.
        features: Feature columns, in model input order.
        label: The label column.
        task: ``"classification"`` or ``"regression"``.
        classes: Sorted label values (classification), whose positions are the class ids.
        mean: Per-feature mean of the training rows.
        std: Per-feature standard deviation of the training rows (1 for constant ones).
        target_mean: Mean of the training targets (regression; 0 otherwise).
        target_std: Their standard deviation (regression; 1 otherwise).
        num_train: Rows in the training split.
        num_val: Rows in the validation split.
        val_fraction: The fraction that assigned the splits.
        row_cache: The folder where each node keeps the encoded row groups it read (see
            :mod:`pipelines.data.stream_cache`), or None to read the source every time.
        train_rows: Training rows of each fragment, in listing order (how data-parallel
            ranks share an epoch's fragments evenly: :func:`assign_fragments`).
        modality: ``"tabular"`` (feature columns), ``"image"`` (an image folder) or
            ``"text"`` (a text column).
        shape: An image's ``(C, H, W)``, a text's ``(max_tokens,)`` (empty for tabular rows).
        image_mode: The PIL mode images are read in (``L`` or ``RGB``; images only).
        resize: Whether images are resized to ``shape`` (``data.image_size`` is set) or must
            have that size.
        vocab: A text column's vocabulary (a token id is its position).
        synonyms: The text augmentation's synonym table
            (:class:`~pipelines.augment.tokens.SynonymTable`), or None.
        holdout_fraction: Share of rows, by their holdout hash, set aside for retraining's
            judgement (:mod:`pipelines.data.row_hashes`); no trial reads them.
        num_holdout: Rows in the holdout split.

    """

    listing: Listing
    features: tuple[str, ...]
    label: str
    task: str
    classes: tuple[Any, ...]
    mean: np.ndarray
    std: np.ndarray
    target_mean: float
    target_std: float
    num_train: int
    num_val: int
    val_fraction: float
    row_cache: str | None = None
    train_rows: tuple[int, ...] = ()
    modality: str = "tabular"
    shape: tuple[int, ...] = ()
    image_mode: str = ""
    resize: bool = False
    vocab: tuple[str, ...] = field(default=(), repr=False)
    synonyms: Any = field(default=None, repr=False)
    holdout_fraction: float = 0.0
    num_holdout: int = 0

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits a fragment's rows are encoded into."""
        return ("train", "val", "holdout") if self.holdout_fraction > 0 else ("train", "val")

    @property
    def featurizer(self) -> Featurizer:
        """What turns encoded (and augmented) rows into model inputs: n-gram counts for text."""
        return Featurizer("hashed_ngrams") if self.modality == "text" else Featurizer()

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The shape of one encoded row (as cached and augmented; text: its token ids)."""
        return self.shape or (len(self.features),)

    def spec(self) -> DataSpec:
        """Return what a trainable needs to build its model for this data."""
        featurized = (self.featurizer.buckets,) if self.modality == "text" else self.row_shape
        return DataSpec(
            input_shape=featurized,
            num_classes=len(self.classes),
            task=self.task,
            num_train=self.num_train,
            num_val=self.num_val,
            target_std=self.target_std,
            modality=self.modality,
        )

    def fingerprint(self) -> str:
        """Return a hash of the listing and of every setting that shapes the splits."""
        settings: list[Any] = [self.listing.fingerprint(), self.features, self.label, self.task]
        if self.modality != "tabular":
            settings += [self.modality, list(self.shape), self.image_mode, self.resize]
        if self.holdout_fraction > 0:
            settings.append(self.holdout_fraction)
        payload = json.dumps([*settings, self.val_fraction])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def fields(self) -> dict[str, Any]:
        """Return what the fit learned, in JSON types (the listing aside), for the cache."""
        return {
            "features": list(self.features),
            "label": self.label,
            "task": self.task,
            "classes": list(self.classes),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "num_train": self.num_train,
            "num_val": self.num_val,
            "val_fraction": self.val_fraction,
            "train_rows": list(self.train_rows),
            "modality": self.modality,
            "shape": list(self.shape),
            "image_mode": self.image_mode,
            "resize": self.resize,
            "vocab": list(self.vocab),
            "synonym_ids": None if self.synonyms is None else self.synonyms.ids.tolist(),
            "synonym_counts": None if self.synonyms is None else self.synonyms.counts.tolist(),
            "holdout_fraction": self.holdout_fraction,
            "num_holdout": self.num_holdout,
        }

    @classmethod
    def from_fields(cls, listing: Listing, fields: dict[str, Any]) -> StreamFit:
        """Rebuild a fit of ``listing`` from :meth:`fields` (a cached fit)."""
        return cls(
            listing=listing,
            features=tuple(fields["features"]),
            label=str(fields["label"]),
            task=str(fields["task"]),
            classes=tuple(fields["classes"]),
            mean=np.asarray(fields["mean"], dtype=np.float64),
            std=np.asarray(fields["std"], dtype=np.float64),
            target_mean=float(fields["target_mean"]),
            target_std=float(fields["target_std"]),
            num_train=int(fields["num_train"]),
            num_val=int(fields["num_val"]),
            val_fraction=float(fields["val_fraction"]),
            train_rows=tuple(int(n) for n in fields["train_rows"]),
            modality=str(fields.get("modality", "tabular")),
            shape=tuple(int(n) for n in fields.get("shape", ())),
            image_mode=str(fields.get("image_mode", "")),
            resize=bool(fields.get("resize", False)),
            vocab=tuple(fields.get("vocab", ())),
            synonyms=_synonym_table(fields.get("synonym_ids"), fields.get("synonym_counts")),
            holdout_fraction=float(fields.get("holdout_fraction", 0.0)),
            num_holdout=int(fields.get("num_holdout", 0)),
        )

    def read_rows(
        self, fragment: Fragment
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Read one fragment: features ``(N, ...)``, raw labels, split and holdout hashes.

        Raises:
            DataError: Naming the file, row group (or image) and row of a fault.

        """
        if self.modality == "image":
            return image_files.read_images(
                self.listing, fragment, self.image_mode, self.shape[1:], resize=self.resize
            )
        if self.modality == "text":
            from pipelines.data.text import encode, tokenize

            table = read_fragment(self.listing.source, fragment, (self.features[0], self.label))
            texts, labels = _texts_and_labels(table, self.features[0], self.label, fragment)
            ids = encode([tokenize(t) for t in texts], self.vocab, self.shape[0])
            return ids, labels, text_hashes(texts), _text_holdout(texts, self.holdout_fraction)
        table = read_fragment(self.listing.source, fragment, (*self.features, self.label))
        x, labels = _features_and_labels(table, self.features, self.label, fragment)
        return x, labels, row_hash(x), holdout_hashes(x, self.holdout_fraction)

    def encode(self, fragment: Fragment, split: str) -> dict[str, np.ndarray]:
        """Read one fragment and encode its rows of ``split``: columns ``x``, ``y``, ``idx``.

        Raises:
            DataError: Naming the file, row group and row, for a missing or non-finite value
                or a label the fitting pass never saw.

        """
        return self.encode_splits(fragment, (split,))[split]

    def encode_splits(
        self, fragment: Fragment, splits: Sequence[str] | None = None
    ) -> dict[str, dict[str, np.ndarray]]:
        """Encode one fragment's rows of each of ``splits`` (all), reading and hashing them once.

        Raises:
            DataError: As :meth:`encode`.

        """
        x, labels, split_hashes, holdout = self.read_rows(fragment)
        masks = assign_rows(split_hashes, holdout, self.val_fraction, self.holdout_fraction)
        return {
            split: self._encoded(x, labels, np.flatnonzero(masks[split]), fragment)
            for split in (splits or self.splits)
        }

    def _encoded(
        self, x: np.ndarray, labels: np.ndarray, rows: np.ndarray, fragment: Fragment
    ) -> dict[str, np.ndarray]:
        if self.modality == "text":
            x = x[rows]  # token ids: augmented, then featurised, per batch
        else:
            # In float32 and in place on the gathered copy: a third of the time of float64.
            x = x[rows].astype(np.float32, copy=False)
            x -= self.mean.astype(np.float32)
            x /= self.std.astype(np.float32)
        if self.task == "regression":
            y = (labels[rows].astype(np.float64) - self.target_mean) / self.target_std
            y = y.astype(np.float32)
        else:
            y = np.searchsorted(np.asarray(self.classes), labels[rows]).astype(np.int64)
            known = np.asarray(self.classes)[np.minimum(y, len(self.classes) - 1)] == labels[rows]
            if not known.all():
                row = int(rows[np.flatnonzero(~known)[0]])
                raise DataError(
                    f"{fragment.path}, row group {fragment.row_group}, row {row + 1}: label "
                    f"{labels[row]!r} was not there when the data was fitted",
                    key="data.path",
                    fix="the files changed during the sweep: start it again",
                )
        return {"x": x, "y": y, "idx": (fragment.first_row + rows).astype(np.int64)}


def _features_and_labels(
    table: Any, features: Sequence[str], label: str, fragment: Fragment
) -> tuple[np.ndarray, np.ndarray]:
    """Return float32 features (N, F) and raw labels, refusing missing and non-finite values."""
    where = f"{fragment.path}, row group {fragment.row_group}"
    _refuse_missing(table, (*features, label), where)
    columns = [
        np.asarray(table.column(name).to_numpy(zero_copy_only=False))
        for name in (*features, label)
    ]
    *feature_values, labels = columns
    for name, values in zip(features, feature_values, strict=True):
        if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
            raise DataError(
                f"column {name!r} of {fragment.path} is not numeric ({values.dtype})",
                key="data.feature_columns",
                fix="list only numeric columns",
            )
    x = np.stack([values.astype(np.float32) for values in feature_values], axis=1)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise DataError(
            f"{where}, row {int(np.flatnonzero(bad)[0]) + 1}: a feature is NaN or infinite",
            key="data.path",
            fix="fix or remove that row",
        )
    return x, labels


def fit_stream(
    listing: Listing,
    *,
    label: str,
    features: Sequence[str] | None = None,
    task: str = "auto",
    val_fraction: float = 0.2,
    holdout_fraction: float = 0.0,
) -> StreamFit:
    """Fit the preprocessing in one pass holding one row group at a time (in this process).

    Args:
        listing: The source (see :func:`list_fragments`).
        label: The label column.
        features: Feature columns; every other column when None.
        task: ``"classification"``, ``"regression"`` or ``"auto"`` (float labels with
            fractional values are regression targets, as for in-memory data).
        val_fraction: Share of rows, by row hash, in the validation split.
        holdout_fraction: Share of rows set aside first (see :func:`assign_rows`).

    Raises:
        DataError: For a missing column, a bad value or an empty split, naming where.

    """
    if label not in listing.columns:
        raise DataError(
            f"{listing.source} has no column {label!r} (columns: {', '.join(listing.columns)})",
            key="data.label_column",
            fix="name an existing column",
        )
    names = tuple(features or [name for name in listing.columns if name != label])
    if not names:
        raise DataError(
            f"{listing.source} has no feature columns", key="data.feature_columns", fix="add some"
        )
    moments, seen = Moments(), _Labels()
    for fragment in listing.fragments:
        table = read_fragment(listing.source, fragment, (*names, label))
        x, labels = _features_and_labels(table, names, label, fragment)
        hashes = (row_hash(x), holdout_hashes(x, holdout_fraction))
        masks = assign_rows(*hashes, val_fraction, holdout_fraction)
        seen.add(labels, masks)
        moments.add(x[masks["train"]])
    seen.check(listing)
    return StreamFit(
        listing=listing,
        features=names,
        label=label,
        mean=moments.mean,
        std=moments.std,
        val_fraction=val_fraction,
        holdout_fraction=holdout_fraction,
        **seen.fitted(task),
    )


class _Labels:
    """What a fitting pass learns from the labels: the split sizes, the task, classes, targets."""

    def __init__(self) -> None:
        self.targets = Moments()
        self.classes: np.ndarray | None = None
        self.fractional = False
        self.num_val = 0
        self.num_holdout = 0
        self.rows = 0
        self.train_rows: list[int] = []

    def add(self, labels: np.ndarray, masks: dict[str, np.ndarray]) -> None:
        """Fold in one fragment's raw labels and its rows' splits (:func:`assign_rows`)."""
        train = masks["train"]
        self.rows += len(labels)
        self.num_val += int(masks["val"].sum())
        self.num_holdout += int(masks["holdout"].sum())
        self.train_rows.append(int(train.sum()))
        if np.issubdtype(labels.dtype, np.number):
            self.targets.add(labels[train].astype(np.float64))
            floats = labels[np.isfinite(labels)] if labels.dtype.kind == "f" else labels[:0]
            self.fractional = self.fractional or bool(np.any(floats != np.round(floats)))
        found = np.unique(labels)
        self.classes = found if self.classes is None else np.union1d(self.classes, found)

    def fitted(self, task: str) -> dict[str, Any]:
        """Return the :class:`StreamFit` fields the labels decide (``task`` may be ``auto``)."""
        chosen = (
            task if task != "auto" else ("regression" if self.fractional else "classification")
        )
        regression = chosen == "regression"
        return {
            "task": chosen,
            "classes": () if regression or self.classes is None else tuple(self.classes.tolist()),
            "target_mean": float(self.targets.mean) if regression else 0.0,
            "target_std": float(self.targets.std) if regression else 1.0,
            "num_train": sum(self.train_rows),
            "num_val": self.num_val,
            "num_holdout": self.num_holdout,
            "train_rows": tuple(self.train_rows),
        }

    def check(self, listing: Listing) -> None:
        """Refuse a pass that read another number of rows than listed, or left a split empty."""
        _check_fitted(listing, self.rows, sum(self.train_rows), self.num_val)


def fit_texts(
    listing: Listing,
    *,
    text: str,
    label: str,
    task: str = "auto",
    val_fraction: float = 0.2,
    holdout_fraction: float = 0.0,
    max_tokens: int = 64,
) -> StreamFit:
    """Fit a text column in one pass: the split, the labels and the training rows' vocabulary.

    As in memory, the vocabulary holds the training texts' most frequent words (ties broken
    alphabetically) extended with their WordNet synonyms; rows are encoded as ``max_tokens``
    token ids and the model reads their hashed n-gram counts. A row's split is decided by
    hashes of its text's UTF-8 bytes (:func:`assign_rows`), so duplicated texts share a split.

    Raises:
        DataError: For a missing column, a missing value or an empty split, naming where.

    """
    from pipelines.data.text import build_synonym_table, tokenize, vocab_from_counts
    from pipelines.data.wordnet import load_wordnet_synonyms

    for name, key in ((text, "data.text_column"), (label, "data.label_column")):
        if name not in listing.columns:
            raise DataError(
                f"{listing.source} has no column {name!r} (columns: {', '.join(listing.columns)})",
                key=key,
                fix="name an existing column",
            )
    counts: Counter[str] = Counter()
    seen = _Labels()
    for fragment in listing.fragments:
        table = read_fragment(listing.source, fragment, (text, label))
        texts, labels = _texts_and_labels(table, text, label, fragment)
        holdout = _text_holdout(texts, holdout_fraction)
        masks = assign_rows(text_hashes(texts), holdout, val_fraction, holdout_fraction)
        seen.add(labels, masks)
        for row in np.flatnonzero(masks["train"]):
            counts.update(tokenize(texts[row]))
    seen.check(listing)
    vocab, synonyms = build_synonym_table(vocab_from_counts(counts), load_wordnet_synonyms())
    return StreamFit(
        listing=listing,
        features=(text,),
        label=label,
        mean=np.zeros(1),
        std=np.ones(1),
        val_fraction=val_fraction,
        holdout_fraction=holdout_fraction,
        modality="text",
        shape=(max_tokens,),
        vocab=tuple(vocab),
        synonyms=synonyms,
        **seen.fitted(task),
    )


def _refuse_missing(table: Any, names: Sequence[str], where: str) -> None:
    """Raise a DataError naming the first row of ``where`` with a missing value in ``names``."""
    for name in names:
        column = table.column(name)
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(
                f"{where}, row {row + 1}: missing value in column {name!r}",
                key="data.path",
                fix="fill or remove rows with missing values",
            )


def _texts_and_labels(
    table: Any, text: str, label: str, fragment: Fragment
) -> tuple[list[str], np.ndarray]:
    """Return one fragment's texts and raw labels, refusing missing values."""
    _refuse_missing(table, (text, label), f"{fragment.path}, row group {fragment.row_group}")
    texts = [str(value) for value in table.column(text).to_pylist()]
    return texts, np.asarray(table.column(label).to_numpy(zero_copy_only=False))


def fit_images(
    listing: Listing,
    *,
    image_size: Sequence[int] | None = None,
    val_fraction: float = 0.2,
    holdout_fraction: float = 0.0,
) -> StreamFit:
    """Fit a streamed image folder in one pass holding one chunk of images at a time.

    As in memory, every image is one class (its folder), and all pixels share one mean and
    standard deviation; the mode and size are the first image's unless ``image_size`` is set.

    Raises:
        DataError: For an image that does not decode or has another size, or an empty split.

    """
    first = image_files.read_images(
        listing, replace(listing.fragments[0], rows=1, length=1), None, image_size, resize=True
    )[0]
    mode = "L" if first.shape[1] == 1 else "RGB"  # what decode_image chose for it
    template = StreamFit(
        listing=listing,
        features=("image",),
        label="class",
        task="classification",
        classes=listing.classes,
        mean=np.zeros(1),
        std=np.ones(1),
        target_mean=0.0,
        target_std=1.0,
        num_train=0,
        num_val=0,
        val_fraction=val_fraction,
        modality="image",
        shape=tuple(int(d) for d in first.shape[1:]),
        image_mode=mode,
        resize=image_size is not None,
        holdout_fraction=holdout_fraction,
    )
    pixels, seen = Moments(), _Labels()
    for fragment in listing.fragments:
        x, labels, split_hashes, holdout = template.read_rows(fragment)
        masks = assign_rows(split_hashes, holdout, val_fraction, holdout_fraction)
        seen.add(labels, masks)
        pixels.add_all(x[masks["train"]])
    seen.check(listing)
    fitted = seen.fitted("classification")
    return replace(
        template,
        mean=pixels.mean,
        std=pixels.std,
        **{k: fitted[k] for k in ("num_train", "num_val", "num_holdout", "train_rows")},
    )


def _synonym_table(ids: Any, counts: Any) -> Any:
    """Rebuild a cached fit's synonym table (None when it has none)."""
    if ids is None or counts is None:
        return None
    from pipelines.augment.tokens import SynonymTable

    return SynonymTable(np.asarray(ids, np.int32), np.asarray(counts, np.int32))


def _check_fitted(listing: Listing, rows_read: int, num_train: int, num_val: int) -> None:
    """Refuse a fitting pass that read another number of rows, or left a split empty."""
    if rows_read != listing.rows:  # rows in == rows out, by counting
        raise DataError(
            f"{listing.source}: read {rows_read} rows, the footers say {listing.rows}",
            key="data.path",
            fix="the files changed while they were read: start again",
        )
    if num_train == 0 or num_val == 0:
        raise DataError(
            f"{listing.source}: the split left {num_train} training and {num_val} validation rows",
            key="data.val_fraction",
            fix="add rows, or choose a val_fraction that leaves rows in both splits",
        )


def read_encoded(fit: StreamFit, fragment: Fragment, split: str) -> dict[str, np.ndarray]:
    """Return one fragment's encoded rows of ``split``, from this node's cache when it has them.

    On a miss with the cache on, both splits are encoded from one read and both are kept, so
    the validation pass that follows a training epoch reads no Parquet either.

    Raises:
        DataError: Naming the file, row group and row of a fault in the source.

    """
    from pipelines.data.stream_cache import RowCache

    if fit.row_cache is None:
        return fit.encode(fragment, split)
    cache = RowCache(fit.row_cache, fit.row_shape)
    cached = cache.load(split, fragment.path, fragment.row_group, fragment.rows)
    if cached is not None:
        return cached
    splits = fit.encode_splits(fragment)
    for name, rows in splits.items():
        cache.save(name, fragment.path, fragment.row_group, rows)
    return splits[split]


def read_split(
    batch: dict[str, np.ndarray], *, fit: StreamFit, split: str
) -> dict[str, np.ndarray]:
    """Map function of :func:`stream_fragments`: read the batch's fragments, keep ``split``."""
    pieces = []
    columns = ("path", "row_group", "rows", "first_row", "offset", "length")
    for path, *numbers in zip(*(batch[name] for name in columns), strict=True):
        fragment = Fragment(str(path), *(int(n) for n in numbers))
        pieces.append(read_encoded(fit, fragment, split))
    rows = {name: np.concatenate([piece[name] for piece in pieces]) for name in pieces[0]}
    if split != "train":  # never augmented: model inputs straight away
        rows["x"] = fit.featurizer(rows["x"])
    return rows


#: Fragments per rank below which data-parallel ranks do not split an epoch's fragments: with
#: few, uneven fragments the ranks' shares differ, and every rank trains only as many batches
#: as the smallest share holds. Below it, each rank reads the whole epoch and keeps every
#: world_size-th batch instead.
FRAGMENTS_PER_RANK = 8


def assign_fragments(
    order: Sequence[int], train_rows: Sequence[int], world: int
) -> list[list[int]]:
    """Deal an epoch's fragments (in ``order``) to ``world`` ranks, evening out their rows.

    Each fragment in turn goes to the rank with the fewest training rows so far (the lowest
    rank on a tie), so every rank computes the same deal from the same order.
    """
    shares: list[list[int]] = [[] for _ in range(world)]
    rows = [0] * world
    for fragment in order:
        rank = rows.index(min(rows))
        shares[rank].append(int(fragment))
        rows[rank] += train_rows[fragment]
    return shares


def rank_share(
    fit: StreamFit, order_seed: Sequence[int], rank: int, world: int, batch_size: int
) -> tuple[list[int], int] | None:
    """Return this rank's fragments of the epoch and the batches every rank trains on.

    None when the ranks should not split the fragments (too few of them, or a fit without
    per-fragment counts): each then reads the whole epoch and keeps its batches.
    """
    count = len(fit.listing.fragments)
    if world <= 1 or count < FRAGMENTS_PER_RANK * world or len(fit.train_rows) != count:
        return None
    order = epoch_order(count, order_seed)
    shares = assign_fragments(order, fit.train_rows, world)
    batches = min(sum(fit.train_rows[i] for i in share) for share in shares) // batch_size
    return shares[rank], batches


def epoch_order(count: int, order_seed: Sequence[int]) -> list[int]:
    """Return the order an epoch reads ``count`` fragments in (the same on every rank)."""
    return [int(i) for i in np.random.default_rng(list(order_seed)).permutation(count)]


def stream_fragments(
    fit: StreamFit,
    split: str,
    *,
    order_seed: Sequence[int] | None = None,
    concurrency: int = 1,
    only: Sequence[int] | None = None,
) -> Any:
    """Return a lazy Ray dataset of ``split``'s encoded rows (columns ``x``, ``y``, ``idx``).

    One zero-CPU task per fragment, pinned to this process's node (see the module docstring),
    at most ``concurrency`` at once; ``order_seed`` shuffles the fragment order, and ``only``
    (fragment indices, in the order given) reads those fragments alone.

    """
    import ray.data

    from pipelines.data.sweep_data import on_this_node

    fragments = list(fit.listing.fragments)
    if only is not None:
        fragments = [fragments[i] for i in only]
    elif order_seed is not None:
        fragments = [fragments[i] for i in epoch_order(len(fragments), order_seed)]
    items = [
        {
            "path": f.path,
            "row_group": f.row_group,
            "rows": f.rows,
            "first_row": f.first_row,
            "offset": f.offset,
            "length": f.length,
        }
        for f in fragments
    ]
    fragment_items: Any = ray.data.from_items(items, override_num_blocks=len(items))
    return fragment_items.map_batches(
        read_split,
        fn_kwargs={"fit": fit, "split": split},
        batch_format="numpy",
        batch_size=1,  # one fragment per call: a bounded block each
        num_cpus=0,
        label_selector=on_this_node(),
        compute=ray.data.TaskPoolStrategy(size=max(1, concurrency)),
    )


def iter_split(fit: StreamFit, split: str, *, batch_size: int = 1024) -> Iterator[dict[str, Any]]:
    """Stream ``split``'s encoded rows in fragment order, in batches (for one reader).

    Raises:
        DataError: Naming the file and row group of a fault met on the way.

    """
    dataset = stream_fragments(fit, split)
    yield from unwrapped(
        dataset.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=1)
    )


_Item = TypeVar("_Item")


def unwrapped(batches: Iterator[_Item]) -> Iterator[_Item]:
    """Pass ``batches`` on; re-raise a DataError a Ray Data task raised as a DataError.

    Ray Data wraps what a task raises in a "UDF failed" error and keeps only its text, so the
    error is rebuilt from its one line (``key: rule. Fix: fix``): the user reads which file is
    damaged, not a task traceback.
    """
    try:
        yield from batches
    except Exception as exc:
        found = _DATA_ERROR_LINE.search(str(exc))
        if found is None:
            raise
        key, rule, fix = found.groups()
        raise DataError(rule, key=key, fix=fix) from None


#: How a DataError's line reads inside a Ray task's traceback text.
_DATA_ERROR_LINE = re.compile(
    r"^pipelines\.errors\.DataError: (?:(data\.[\w.]+): )?(.*?)\. Fix: (.*)$", re.MULTILINE
)
