"""Load a search-space YAML file into a validated :class:`SearchSpace`.

Every user mistake becomes a one-line :class:`SearchSpaceError` naming the file, the dotted key,
the rule (echoing the value) and a fix; raw ``yaml`` and pydantic errors never escape.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from search_spaces.errors import SearchSpaceError
from search_spaces.messages import did_you_mean, short
from search_spaces.rules import check_conditions
from search_spaces.space import SearchSpace
from search_spaces.spec import PARAM_TYPES, ParamSpec
from search_spaces.yaml_input import parse_yaml, read_yaml_text

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPEC = TypeAdapter[ParamSpec](ParamSpec)
_TYPES = ", ".join(PARAM_TYPES)
_EXAMPLE = "parameters: {lr: {type: loguniform, low: 1.0e-4, high: 1.0e-1}}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """``SafeLoader`` that rejects repeated keys; plain ``safe_load`` silently keeps the last."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: list[object] = []
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # ``<<: *base`` merges; overriding a merged key is intended, not a repeat
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.MarkedYAMLError(
                problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
            )
        seen.append(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def load_search_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file.

    Args:
        path: The YAML file, e.g. ``search_spaces/library/mnist_cnn.yaml``.

    Returns:
        The validated search space, with ``source`` set to ``path``.

    Raises:
        SearchSpaceError: If the file is missing, unreadable, not valid YAML or not a valid space.

    """
    source = str(path)

    def error(rule: str, fix: str) -> SearchSpaceError:
        return SearchSpaceError(rule, fix=fix, source=source)

    try:
        text = read_yaml_text(Path(path), error)
    except FileNotFoundError:
        raise SearchSpaceError(
            "file not found",
            fix="check the path (bundled spaces: search_spaces/library/)",
            source=source,
        ) from None
    try:
        data = parse_yaml(text, _UniqueKeyLoader, error)
    except yaml.YAMLError as exc:
        # Marks are 0-based; editors count lines and columns from 1.
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        column = f" (column {mark.column + 1})" if mark is not None else ""
        raise SearchSpaceError(
            f"invalid YAML: {problem}{column}",
            fix="check indentation, colons and quoting near that line, and that no key repeats",
            source=source,
            key=f"line {mark.line + 1}" if mark is not None else None,
        ) from None
    return parse_search_space(data, source=source)


def parse_search_space(data: object, *, source: str) -> SearchSpace:
    """Validate an already-loaded mapping (the parsed YAML) into a :class:`SearchSpace`.

    Args:
        data: The parsed document, expected to be ``{"parameters": {name: spec, ...}}``.
        source: Where ``data`` came from, named in error messages.

    Returns:
        The validated search space.

    Raises:
        SearchSpaceError: For the first problem found.

    """

    def fail(rule: str, fix: str, key: str | None = "parameters") -> SearchSpaceError:
        return SearchSpaceError(rule, fix=fix, source=source, key=key)

    if data is None:
        raise fail("file is empty", f"add a 'parameters' mapping, e.g. {_EXAMPLE}")
    if not isinstance(data, dict):
        raise fail(f"top level must be a mapping, got {short(data)}", f"write {_EXAMPLE}", None)
    for top_key in data:
        if top_key != "parameters":
            raise fail(
                f"unknown top-level key {top_key!r}{did_you_mean(top_key, ['parameters'])}",
                "the only top-level key is 'parameters'",
                str(top_key),
            )
    if "parameters" not in data:
        raise fail("missing required key 'parameters'", f"write {_EXAMPLE}")
    params = data["parameters"]
    if not isinstance(params, dict) or not params:
        raise fail(
            f"must be a non-empty mapping of name -> spec, got {short(params)}",
            f"write {_EXAMPLE}",
        )
    specs: dict[str, Any] = {}
    for name, raw in params.items():
        key = f"parameters.{name}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise fail(
                f"parameter name {name!r} is not an identifier",
                "use letters, digits and underscores, not starting with a digit",
                key,
            )
        if not isinstance(raw, dict):
            raise fail(
                f"expected a mapping with a 'type' key, got {short(raw)}",
                f"write e.g. {name}: {{type: constant, value: ...}}; types: {_TYPES}",
                key,
            )
        try:
            specs[name] = _SPEC.validate_python(raw)
        except ValidationError as exc:
            raise _translate(exc, raw, source=source, key=key) from None
    # Rules between parameters (``when`` parents) need every spec parsed first.
    check_conditions(specs, source=source)
    return SearchSpace(source=source, params=specs)


def _translate(
    exc: ValidationError, raw: dict[Any, Any], *, source: str, key: str
) -> SearchSpaceError:
    """Turn the first pydantic error for parameter ``key`` into a one-line SearchSpaceError."""
    errors = exc.errors()
    # A typo such as ``lo:`` yields both "extra" and "missing"; the typo is the useful one.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    tag = raw.get("type")
    loc = [str(part) for part in err["loc"]]
    if loc and loc[0] == tag:  # a discriminated union puts the tag first; it is not a key
        loc = loc[1:]
    where = ".".join([key, *loc])
    kind = err["type"]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, SearchSpaceError):  # raised by our own rules, with a relative key
        sub_key = f"{where}.{cause.key}" if cause.key else where
        return SearchSpaceError(cause.rule, fix=cause.fix, source=source, key=sub_key)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        rule = (
            f"unknown type {tag!r}{did_you_mean(tag, PARAM_TYPES)}"
            if kind == "union_tag_invalid"
            else "missing key 'type'"
        )
        fix = f"use one of: {_TYPES}"
        return SearchSpaceError(rule, fix=fix, source=source, key=f"{key}.type")
    spec_cls = PARAM_TYPES[str(tag)]
    # ``when`` (shared by every type) goes last: the type's own keys are the ones to see first.
    own = [name for name in spec_cls.model_fields if name not in ("type", "when")]
    fields = ["type", *own, "when"]
    fix = f"valid keys for type {tag}: {', '.join(fields)}; e.g. {spec_cls.EXAMPLE}"
    if kind == "extra_forbidden":
        rule = f"unknown key {loc[-1]!r}{did_you_mean(loc[-1], fields)}"
    elif kind == "missing":
        rule = f"missing required key {loc[-1]!r}"
    else:
        rule = f"{err['msg']}, got {short(err.get('input'))}"
    return SearchSpaceError(rule, fix=fix, source=source, key=where)
