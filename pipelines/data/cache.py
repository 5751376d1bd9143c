"""On-disk cache of preprocessed data, keyed by a hash of the data and the preprocessing config.

A sweep preprocesses its data once and every trial shares the result through Ray's object
store; this cache also lets the NEXT sweep on unchanged data skip preprocessing entirely. The key
covers everything the result depends on:

- the source: a bundled dataset's name and the version of the package that ships it; a user
  file's bytes (SHA-256); an image folder's file names, sizes and modification times (hashing
  every image's bytes would cost as much as decoding them);
- the preprocessing settings of the ``data`` section (split, seed, columns, tokens, image size);
- :data:`~pipelines.data.preprocess.PREPROCESS_VERSION`, bumped when the code changes its output.

Augmentation is NOT in the key: it runs per trial and epoch, after the cache.

Layout under ``$TUNEPIPE_HOME/cache/data/``: one folder per key holding ``arrays.npz`` (no
pickles), ``meta.json`` and ``digests.json`` (the SHA-256 of the other two), plus
``builds.jsonl`` with one line per preprocessing run, which is how a user (or a test) can tell
that a sweep reused the cache.

An entry is written in a staging folder and renamed into place, so a crash or a full disk never
leaves half an entry; a failed write removes its staging folder and is one clear
:class:`~pipelines.errors.DataError`. An entry is trusted only when its digests match: a
truncated or bit-flipped entry (a torn write, a bad disk) is logged and rebuilt, never decoded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
import zlib
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import DataConfig
from pipelines.data.features import Featurizer
from pipelines.data.preprocess import PREPROCESS_VERSION, Prepared
from pipelines.data.sources import BUILTIN_DATASETS
from pipelines.errors import DataError
from pipelines.paths import tunepipe_home

logger = logging.getLogger(__name__)

#: The data-section keys that change what preprocessing produces.
PREPROCESS_KEYS = (
    "dataset",
    "modality",
    "task",
    "label_column",
    "text_column",
    "feature_columns",
    "image_size",
    "max_tokens",
    "val_fraction",
    "holdout_fraction",
    "seed",
)
_ARRAYS = (
    "x_train",
    "y_train",
    "x_val",
    "y_val",
    "x_holdout",
    "y_holdout",
    "synonym_ids",
    "synonym_counts",
)
_DIGESTS = "digests.json"
#: The files of an entry that its digests cover, in the order they are written.
_PAYLOAD = ("arrays.npz", "meta.json")
#: How decoding a damaged entry fails (zip, zlib, numpy header and JSON errors), should one
#: ever pass its digests: still a rebuild, never a crash.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    KeyError,
    TypeError,
    EOFError,
    RuntimeError,
    zipfile.BadZipFile,
    zlib.error,
)


class _Damaged(ValueError):
    """An entry whose files do not match the digests written with it."""


def cache_root() -> Path:
    """Return the folder that holds every cached preprocessing result."""
    return tunepipe_home() / "cache" / "data"


def cache_key(config: DataConfig) -> str:
    """Return the hash of the source data and the settings that shape the preprocessed result."""
    settings = config.model_dump(mode="json", include=set(PREPROCESS_KEYS))
    payload = {"source": _source_identity(config), "settings": settings, "v": PREPROCESS_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _source_identity(config: DataConfig) -> Any:
    if config.dataset in BUILTIN_DATASETS:
        package = BUILTIN_DATASETS[config.dataset].package
        return [config.dataset, package, metadata.version(package)]
    path = config.local_path()
    try:
        if path.is_file():
            return [config.dataset, _file_hash(path)]
        files = sorted(p for p in path.rglob("*") if p.is_file())
        stats = [(p, p.stat()) for p in files]
    except OSError as exc:  # unreadable: say so here, before any row is read
        raise DataError(
            f"cannot read {exc.filename or config.path}: {exc.strerror or exc}",
            key="data.path",
            fix="check the data's permissions",
        ) from None
    return [
        config.dataset,
        [[str(p.relative_to(path)), st.st_size, st.st_mtime_ns] for p, st in stats],
    ]


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load(key: str) -> Prepared | None:
    """Return the cached result for ``key``, or None when there is none or it is damaged.

    A damaged entry (its digests do not match, or it does not decode) is logged and left for
    :func:`save` to replace: a cache is rebuilt, never trusted blindly and never fatal.
    """
    folder = cache_root() / key
    if not folder.is_dir():
        return None
    try:
        _verify(folder)
        return _read(folder)
    except _DECODE_ERRORS as exc:
        logger.warning("data cache: entry %s is damaged (%s); rebuilding it", folder, exc)
        return None


def _verify(folder: Path) -> None:
    """Raise :class:`_Damaged` unless every payload file matches the digest written with it."""
    try:
        expected = json.loads((folder / _DIGESTS).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _Damaged("no digests: written by an older tunepipe or never finished") from None
    if not isinstance(expected, dict):
        raise _Damaged(f"{_DIGESTS} is not a mapping")
    for name in _PAYLOAD:
        if expected.get(name) != _file_hash(folder / name):
            raise _Damaged(f"{name} does not match its SHA-256 digest")


def _read(folder: Path) -> Prepared:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    with np.load(folder / "arrays.npz", allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    return Prepared(
        x_train=arrays["x_train"],
        y_train=arrays["y_train"],
        x_val=arrays["x_val"],
        y_val=arrays["y_val"],
        x_holdout=arrays.get("x_holdout"),
        y_holdout=arrays.get("y_holdout"),
        modality=meta["modality"],
        task=meta["task"],
        num_classes=meta["num_classes"],
        class_names=tuple(meta["class_names"]),
        input_shape=tuple(meta["input_shape"]),
        featurizer=Featurizer(**meta["featurizer"]),
        target_mean=meta["target_mean"],
        target_std=meta["target_std"],
        synonym_ids=arrays.get("synonym_ids"),
        synonym_counts=arrays.get("synonym_counts"),
        vocab=tuple(meta["vocab"]),
    )


def save(key: str, prepared: Prepared) -> Path:
    """Write ``prepared`` under ``key`` atomically: a complete entry appears, or none does.

    Raises:
        DataError: If the entry cannot be written (a full disk, no permission); the staging
            folder is removed first.

    """
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    except OSError as exc:
        raise _write_error(root, exc) from None
    try:
        _write(staging, prepared)
    except BaseException as exc:  # an interrupt too: no half-written staging folder stays
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _write_error(root, exc) from None
        raise
    return _publish(staging, root / key)


def _write(staging: Path, prepared: Prepared) -> None:
    """Write the entry's files, then the digests of what landed on disk."""
    arrays = {
        name: getattr(prepared, name) for name in _ARRAYS if getattr(prepared, name) is not None
    }
    np.savez(staging / "arrays.npz", **arrays)
    meta = {
        "modality": prepared.modality,
        "task": prepared.task,
        "num_classes": prepared.num_classes,
        "class_names": list(prepared.class_names),
        "input_shape": list(prepared.input_shape),
        "featurizer": prepared.featurizer.to_dict(),
        "target_mean": prepared.target_mean,
        "target_std": prepared.target_std,
        "vocab": list(prepared.vocab),
        "fingerprint": prepared.fingerprint(),
    }
    (staging / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    digests = {name: _file_hash(staging / name) for name in _PAYLOAD}
    (staging / _DIGESTS).write_text(json.dumps(digests), encoding="utf-8")


def _publish(staging: Path, final: Path) -> Path:
    """Rename the staging folder into place (a rename within one folder is atomic)."""
    if final.exists():  # a damaged entry that load() refused
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.replace(staging, final)
    except OSError:  # another sweep wrote the same entry first: theirs is as good as ours
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _write_error(root: Path, exc: OSError) -> DataError:
    return DataError(
        f"cannot write the preprocessed data to the cache in {root}: {exc.strerror or exc}",
        key="data.cache",
        fix="free disk space there (or point TUNEPIPE_HOME elsewhere), or set data.cache: false",
    )


def record_build(key: str, config: DataConfig, seconds: float) -> None:
    """Append one line to ``builds.jsonl``: preprocessing ran for ``key``.

    Raises:
        DataError: If the line cannot be written (a full disk, no permission).

    """
    root = cache_root()
    line = {"key": key, "dataset": config.dataset, "seconds": round(seconds, 3), "at": time.time()}
    try:
        root.mkdir(parents=True, exist_ok=True)
        with (root / "builds.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")
    except OSError as exc:
        raise _write_error(root, exc) from None


def builds(key: str | None = None) -> list[dict[str, Any]]:
    """Return the recorded preprocessing runs (all, or those of ``key``).

    A line that does not parse (the end of an append cut short by a crash or a full disk) is
    skipped: the log records what happened, it is not an input to trust.
    """
    path = cache_root() / "builds.jsonl"
    if not path.is_file():
        return []
    records = []
    for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if isinstance(record, dict) and (key is None or record.get("key") == key):
            records.append(record)
    return records
