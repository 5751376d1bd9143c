"""Search-space files written for a test, and the one-line error contract they are checked by."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent
from typing import Any

from search_spaces import SearcherSpace, SearchSpace, load_search_space, searcher_space
from search_spaces.errors import SearchSpaceError
from search_spaces.to_tune import to_tune_domains

LIBRARY = Path(__file__).resolve().parents[2] / "search_spaces" / "library"


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(dedent(text), encoding="utf-8")
    return path


def space_of(tmp_path: Path, **params: str) -> SearchSpace:
    """Load a space whose parameters are given as inline YAML specs, e.g. lr="{type: ...}"."""
    body = "".join(f"  {name}: {spec}\n" for name, spec in params.items())
    return load_search_space(write(tmp_path, "parameters:\n" + body))


def assert_user_error(err: SearchSpaceError, path: Path | str, key: str | None) -> str:
    """Check the one-line contract: file, key, rule and fix all in a single line."""
    message = str(err)
    assert "\n" not in message
    assert Path(path).name in message
    assert err.source == str(path)
    assert err.key == key
    if key is not None:
        assert f": {key}: " in message
    assert ". Fix: " in message
    assert err.fix.strip()
    return message


def convert_for(space: SearchSpace, method: str) -> SearcherSpace:
    """Convert ``space`` for searcher ``method``, in the form its registry entry names."""
    from pipelines.sweep.strategies import SEARCHERS

    return searcher_space(space, SEARCHERS[method].space_form, method)


def flat_domains(space: SearchSpace, method: str) -> dict[str, Any]:
    """Return flat Tune domains as ``method`` would get them: random draws every parameter
    independently, grid needs discrete axes, a model-based searcher takes Ray's conversion."""
    form = {"random": "independent", "grid": "grid"}.get(method, "tune")
    return to_tune_domains(space, form, method)
