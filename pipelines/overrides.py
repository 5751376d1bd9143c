"""Dotted ``key=value`` overrides, applied to the raw config mapping before validation."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import ConfigError
from search_spaces.messages import short
from search_spaces.yaml_input import parse_yaml


def parse_set_options(options: list[str]) -> dict[str, Any]:
    """Parse CLI ``--set key=value`` options; values are read as YAML (``8`` is an int).

    Raises:
        ConfigError: If an option has no ``=`` or an empty key.

    """
    parsed: dict[str, Any] = {}
    for option in options:
        key, sep, text = option.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"{short(option)} is not of the form key=value",
                source="--set",
                fix="write e.g. --set search.num_samples=8",
            )
        parsed[key.strip()] = _option_value(key.strip(), text)
    return parsed


def _option_value(key: str, text: str) -> Any:
    """Read an option's value as YAML; text that is not YAML stays the string it is."""

    def error(rule: str, fix: str) -> ConfigError:
        return ConfigError(rule, fix=fix, source="--set", key=key)

    if not text.strip():
        return ""
    try:
        return parse_yaml(text, yaml.SafeLoader, error)  # bounded like a file's values
    except yaml.YAMLError:
        return text


def apply_overrides(
    raw: dict[str, Any], overrides: dict[str, Any], *, source: str | Path
) -> dict[str, Any]:
    """Return a copy of ``raw`` with each dotted key set to its value.

    Intermediate mappings are created when missing; unknown final keys are left for the schema to
    reject, so an override typo gets the same "unknown key" error as a file typo.

    Raises:
        ConfigError: If a dotted path runs through a value that is not a mapping.

    """
    result = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = result
        parts = dotted.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(
                    f"cannot set {dotted!r}: {prefix!r} is not a mapping",
                    source=source,
                    key=dotted,
                    fix="check the key path",
                )
            node = child
        node[parts[-1]] = value
    return result
