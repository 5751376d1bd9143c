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
pickles) and ``meta.json``, plus ``builds.jsonl`` with one line per preprocessing run, which is
how a user (or a test) can tell that a sweep reused the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import DataConfig
from pipelines.data.features import Featurizer
from pipelines.data.preprocess import PREPROCESS_VERSION, Prepared
from pipelines.data.sources import BUILTIN_DATASETS
from pipelines.paths import tunepipe_home

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
    assert config.path is not None
    if config.path.is_file():
        return [config.dataset, _file_hash(config.path)]
    files = sorted(p for p in config.path.rglob("*") if p.is_file())
    return [
        config.dataset,
        [[str(p.relative_to(config.path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files],
    ]


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load(key: str) -> Prepared | None:
    """Return the cached result for ``key``, or None when there is none (or it is unreadable)."""
    folder = cache_root() / key
    try:
        meta = json.loads((folder / "meta.json").read_text())
        with np.load(folder / "arrays.npz", allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, KeyError):
        return None  # a half-written or damaged entry is rebuilt, not trusted
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
    """Write ``prepared`` under ``key`` atomically (a crash never leaves a half entry behind)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
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
    (staging / "meta.json").write_text(json.dumps(meta))
    final = root / key
    if final.exists():  # a damaged entry that load() refused
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.replace(staging, final)
    except OSError:  # another sweep wrote the same entry first: theirs is as good as ours
        shutil.rmtree(staging, ignore_errors=True)
    return final


def record_build(key: str, config: DataConfig, seconds: float) -> None:
    """Append one line to ``builds.jsonl``: preprocessing ran for ``key``."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    line = {"key": key, "dataset": config.dataset, "seconds": round(seconds, 3), "at": time.time()}
    with (root / "builds.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


def builds(key: str | None = None) -> list[dict[str, Any]]:
    """Return the recorded preprocessing runs (all, or those of ``key``)."""
    path = cache_root() / "builds.jsonl"
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [line for line in lines if key is None or line["key"] == key]
