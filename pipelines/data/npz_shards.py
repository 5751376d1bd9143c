"""A folder of ``.npz`` shards read as streamed fragments, one shard at a time.

Each shard holds ``x`` (rows, features) and ``y`` (rows,), as ``numpy.savez`` writes them. A
shard is one fragment (a zip member cannot be read in part), so a shard's size bounds a
reader's memory: write shards of a few hundred MB at most. The listing reads only the arrays'
headers (shape and dtype), never their data, and works on any pyarrow filesystem (local or
an object store). Features become columns ``x0 .. x{F-1}`` and the label column ``y``, so the
shards go through the same fitting, splitting and encoding as Parquet row groups.
"""

from __future__ import annotations

import zipfile
import zlib
from typing import Any

import numpy as np

from pipelines.errors import DataError

#: The label column of a shard (``y``); ``data.label_column`` does not apply to npz.
LABEL = "y"
#: How reading a damaged shard fails (zip, zlib, numpy header and format errors).
_DAMAGE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def feature_names(count: int) -> tuple[str, ...]:
    """Return the column names of ``count`` features (``x0`` ...)."""
    return tuple(f"x{i}" for i in range(count))


def shard_header(handle: Any, path: str) -> tuple[tuple[str, ...], int]:
    """Return a shard's column names and rows from its arrays' headers (no data read).

    Raises:
        DataError: If the shard is not an npz of a 2-D ``x`` and a matching 1-D ``y``.

    """
    try:
        with zipfile.ZipFile(handle) as archive:
            shapes = {name: _shape(archive, name) for name in ("x", "y")}
    except KeyError as exc:
        raise DataError(
            f"{path} lacks array {exc}",
            key="data.path",
            fix="save the features as 'x' and the labels as 'y' (np.savez)",
        ) from None
    except _DAMAGE as exc:
        raise _unreadable(path, exc) from None
    x, y = shapes["x"], shapes["y"]
    if len(x) != 2 or y != (x[0],):
        raise DataError(
            f"{path} has x of shape {x} and y of shape {y}",
            key="data.path",
            fix="stream shards of x (rows, features) and y (rows,); load images into memory",
        )
    return (*feature_names(x[1]), LABEL), int(x[0])


def _shape(archive: zipfile.ZipFile, name: str) -> tuple[int, ...]:
    with archive.open(f"{name}.npy") as member:
        major, _ = np.lib.format.read_magic(member)
        read_header = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(member)
    if dtype.hasobject:
        raise ValueError(f"{name} holds Python objects, which are never unpickled")
    return tuple(int(n) for n in shape)


def read_shard(handle: Any, path: str, columns: tuple[str, ...]) -> Any:
    """Read a shard's ``columns`` as an Arrow table.

    Raises:
        DataError: Naming the shard, if it is damaged or lacks a column.

    """
    import pyarrow as pa

    try:
        with np.load(handle, allow_pickle=False) as archive:
            x, y = archive["x"], archive["y"]
    except _DAMAGE as exc:
        raise _unreadable(path, exc) from None
    names = feature_names(x.shape[1]) if x.ndim == 2 else ()
    wanted: dict[str, Any] = {}
    for column in columns:
        if column == LABEL:
            wanted[column] = y
        elif column in names:
            wanted[column] = x[:, names.index(column)]
        else:
            raise DataError(
                f"{path} has no column {column!r} (x of shape {x.shape})",
                key="data.feature_columns",
                fix="give every shard the same number of features",
            )
    return pa.table(wanted)


def _unreadable(path: str, exc: BaseException) -> DataError:
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return DataError(
        f"{path} is not a readable .npz shard ({detail})",
        key="data.path",
        fix="restore an intact copy, or write it again with numpy.savez(path, x=..., y=...)",
    )
