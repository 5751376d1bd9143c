"""Streamed data kept on disk between reads: the fitted preprocessing, and encoded row groups.

Two caches, both under ``$TUNEPIPE_HOME/cache/stream/`` and both off with ``data.cache: false``:

- **The fit** (``fits/<key>.json``), keyed by the source's listing fingerprint (paths, sizes,
  modification times: no data read) and the settings the fit depends on. A second sweep on
  unchanged files skips the fitting pass, which reads every row group once.
- **Encoded row groups** (``rows/<fit fingerprint>/<split>/<fragment>.npz``), written by the
  first read of a row group on each node and read by every later epoch and trial there: later
  epochs load float32 arrays from local disk instead of decoding, hashing and normalising
  Parquet again. The folder is the driver's absolute path, made on each node that reads (on a
  shared file system the nodes share it). A row group is cached only while the disk keeps
  :data:`KEEP_FREE_BYTES` free after the write, so a dataset larger than a node's disk streams
  from its source every epoch instead of filling the disk.

Neither is ever trusted blindly. The fit's JSON carries the SHA-256 of its body; a row group's
``.npz`` is a zip whose members carry CRC-32s that are checked as the arrays are read, and the
arrays' shapes are checked against the fragment. A damaged entry (a torn write, a flipped bit)
is logged, deleted and rebuilt from the source, never used. Entries are written to a temporary
name and renamed into place, so readers never see half an entry; a write that fails (a full
disk) leaves no file behind and only costs the cache, never the trial.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.paths import tunepipe_home

logger = logging.getLogger(__name__)

#: Bumped when the encoding of streamed rows changes, so no older entry is read as current.
STREAM_CACHE_VERSION = 2
#: Free disk a node keeps: a row group is not cached if the write would leave less.
KEEP_FREE_BYTES = 1 << 30
#: How reading a damaged ``.npz`` fails (zip, zlib, numpy header errors).
_DECODE_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)
_ARRAYS = ("x", "y", "idx")
#: Folders this process could not write: warned about once, then skipped (a node that cannot
#: make the driver's path would otherwise log every row group of every epoch).
_UNWRITABLE: set[Path] = set()


def stream_cache_root() -> Path:
    """Return the folder of both streamed-data caches."""
    return tunepipe_home() / "cache" / "stream"


def row_cache_folder(fit_fingerprint: str) -> str:
    """Return the absolute folder where each node keeps one fit's encoded row groups."""
    return str(stream_cache_root() / "rows" / f"{fit_fingerprint}-v{STREAM_CACHE_VERSION}")


def fit_key(listing_fingerprint: str, settings: dict[str, Any]) -> str:
    """Return the key of a fit: the listing and every setting that changes the fit."""
    payload = json.dumps([listing_fingerprint, settings, STREAM_CACHE_VERSION], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def load_fit(key: str) -> dict[str, Any] | None:
    """Return the fields of the fit cached under ``key``, or None (none, or damaged)."""
    path = stream_cache_root() / "fits" / f"{key}.json"
    try:
        entry = json.loads(path.read_text())
        body = entry["body"]
        if _digest(body) != entry["sha256"]:
            raise ValueError("its body does not match its digest")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("data: the cached fit %s is damaged (%s); fitting again", path, exc)
        path.unlink(missing_ok=True)
        return None
    return dict(body)


def save_fit(key: str, body: dict[str, Any]) -> None:
    """Cache a fit's fields (JSON types only) under ``key``; a failed write is only logged."""
    folder = stream_cache_root() / "fits"
    payload = json.dumps({"body": body, "sha256": _digest(body)}).encode()
    _write_atomically(folder, f"{key}.json", lambda handle: handle.write(payload))


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class RowCache:
    """One node's encoded row groups of one fit, under the folder the driver chose.

    Args:
        folder: See :func:`row_cache_folder`.
        row_shape: The shape of an encoded row's features (to check the shapes).

    """

    def __init__(self, folder: str, row_shape: tuple[int, ...]) -> None:
        self.folder = Path(folder)
        self.row_shape = tuple(row_shape)

    def path(self, split: str, file: str, row_group: int) -> Path:
        """Return where one row group's rows of ``split`` are kept."""
        name = hashlib.sha256(f"{file}\0{row_group}".encode()).hexdigest()[:24]
        return self.folder / split / f"{name}.npz"

    def load(self, split: str, file: str, row_group: int, rows: int) -> dict[str, Any] | None:
        """Return the cached rows of ``split`` from the row group of ``rows`` rows, or None.

        A damaged entry is deleted (and logged) so the next read rebuilds it.
        """
        path = self.path(split, file, row_group)
        try:
            with np.load(path, allow_pickle=False) as entry:
                arrays = {name: entry[name] for name in _ARRAYS}  # reads check the CRC-32s
            _check_shapes(arrays, rows, self.row_shape)
        except (FileNotFoundError, NotADirectoryError):
            return None  # not cached (or no cache folder can exist here)
        except _DECODE_ERRORS as exc:
            logger.warning("data: cached rows %s are damaged (%s); reading the source", path, exc)
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            return None
        return arrays

    def save(self, split: str, file: str, row_group: int, arrays: dict[str, Any]) -> None:
        """Keep one row group's encoded rows of ``split``, if the disk has room to spare."""
        folder = self.folder / split
        if folder in _UNWRITABLE:
            return
        size = sum(np.asarray(arrays[name]).nbytes for name in _ARRAYS)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if shutil.disk_usage(folder).free - size < KEEP_FREE_BYTES:
                return
        except OSError as exc:
            _UNWRITABLE.add(folder)
            logger.warning("data: cannot cache rows in %s (%s); reading the source", folder, exc)
            return
        name = self.path(split, file, row_group).name
        _write_atomically(
            folder, name, lambda handle: np.savez(handle, **{k: arrays[k] for k in _ARRAYS})
        )


def _check_shapes(arrays: dict[str, Any], rows: int, row_shape: tuple[int, ...]) -> None:
    x, y, idx = (arrays[name] for name in _ARRAYS)
    count = len(idx)
    if x.shape != (count, *row_shape) or len(y) != count or count > rows:
        raise ValueError(f"shapes {x.shape}, {y.shape}, {idx.shape} fit no row group of {rows}")


def _write_atomically(folder: Path, name: str, write: Any) -> None:
    """Write ``folder/name`` through a temporary file renamed into place; log a failure."""
    tmp: str | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, folder / name)
        tmp = None
    except OSError as exc:
        logger.warning("data: could not cache %s (%s); reading the source instead", name, exc)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
