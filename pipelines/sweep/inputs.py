"""A sweep's inputs given as Python objects (a notebook's config dict, search space and data).

Each object is saved as the file a config would name, under ``$TUNEPIPE_HOME/inputs/`` and
named by a hash of its content, and the config then names that file: everything downstream
(validation, the preprocessing cache, the data fingerprint, the MLflow record, ``replay``)
works as for a sweep started from files, and a rerun with the same objects reuses the same
files.
"""

from __future__ import annotations

import hashlib
import io
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipelines.config import ExperimentConfig, config_from_mapping, read_yaml_mapping
from pipelines.errors import ConfigError
from pipelines.paths import tunepipe_home
from search_spaces import parse_search_space

#: Where saved inputs go, below the state folder.
INPUTS = "inputs"


def sweep_config(
    config: str | Path | Mapping[str, Any] | ExperimentConfig,
    overrides: Mapping[str, Any] | None = None,
    *,
    search_space: Mapping[str, Any] | None = None,
    data: Any = None,
) -> ExperimentConfig:
    """Return the validated config a sweep runs, Python objects saved as the files it names.

    Args:
        config: An experiment YAML file, the same as a dict, or a loaded config.
        overrides: Dotted keys to replace, e.g. ``{"search.num_samples": 8}``.
        search_space: The search space as a dict, in the vocabulary of the YAML files
            (``{"parameters": {...}}``, or the parameters alone).
        data: The data in memory: ``(x, y)`` arrays, a ``{"x": ..., "y": ...}`` dict, a pandas
            DataFrame (label in ``data.label_column``) or a ``ray.data.Dataset``.

    Raises:
        UserInputError: For an invalid config, search space or data.
        TypeError: For overrides given with an already loaded config.

    """
    if isinstance(config, ExperimentConfig):
        if overrides:
            raise TypeError("overrides apply to a config file or dict; apply them yourself")
        if search_space is None and data is None:
            return config
        raw, source = config.to_dict(), config.source
    elif isinstance(config, Mapping):
        raw, source = _plain(config), None
    else:
        source = Path(config)
        raw = read_yaml_mapping(source)
    if search_space is not None:
        trainable = dict(raw.get("trainable") or {})
        trainable["search_space"] = str(save_search_space(search_space))
        raw["trainable"] = trainable
    if data is not None:
        section = dict(raw.get("data") or {})
        dataset, path = save_data(data)
        raw["data"] = {**section, "dataset": dataset, "path": str(path)}
    return config_from_mapping(raw, dict(overrides or {}), source=source)


def save_search_space(space: Mapping[str, Any]) -> Path:
    """Validate a search space given as a dict and save it as YAML; return the file.

    Raises:
        SearchSpaceError: For an invalid space (source ``search_space``).

    """
    document = dict(space) if "parameters" in space else {"parameters": dict(space)}
    parse_search_space(document, source="search_space")  # errors name the argument
    text = yaml.safe_dump(_plain(document), sort_keys=False)
    return _write(f"space-{_digest(text.encode())}.yaml", text.encode())


def save_data(data: Any) -> tuple[str, Path]:
    """Save in-memory data as an ``npz`` or Parquet file; return ``(dataset, path)``.

    Raises:
        ConfigError: For data of another kind.

    """
    frame = _frame(data)
    if frame is not None:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        payload = buffer.getvalue()
        return "parquet", _write(f"data-{_digest(payload)}.parquet", payload)
    arrays = _arrays(data)
    buffer = io.BytesIO()
    np.savez(buffer, x=arrays[0], y=arrays[1])
    payload = buffer.getvalue()
    return "npz", _write(f"data-{_digest(payload)}.npz", payload)


def _frame(data: Any) -> Any:
    """Return ``data`` as a pandas DataFrame if it is one (or a Ray dataset), else None."""
    ray_data = sys.modules.get("ray.data")  # only a program that uses Ray has its datasets
    if ray_data is not None and isinstance(data, ray_data.Dataset):
        return data.to_pandas()  # in memory here: larger-than-memory data streams elsewhere
    if hasattr(data, "to_parquet") and hasattr(data, "columns"):
        return data
    return None


def _arrays(data: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, Mapping) and {"x", "y"} <= set(data):
        x, y = data["x"], data["y"]
    elif isinstance(data, tuple | list) and len(data) == 2:
        x, y = data
    else:
        raise ConfigError(
            f"data of type {type(data).__name__} cannot be tuned on",
            key="data",
            fix="pass (x, y) arrays, a {'x': ..., 'y': ...} dict, a DataFrame or a Ray dataset",
        )
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ConfigError(
            f"data has {len(x)} rows of x but {len(y)} of y",
            key="data",
            fix="pass one label per row",
        )
    return x, y


def _write(name: str, payload: bytes) -> Path:
    path = tunepipe_home() / INPUTS / name
    if not path.exists():  # named by its content: an existing file already holds it
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(payload)
        tmp.replace(path)
    return path


def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """Turn mappings and sequences (and numpy scalars) into plain YAML-able data."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    item = getattr(value, "item", None)
    return item() if callable(item) and not isinstance(value, str) else value
