"""Where the repository and its shipped configs are, and shrunk copies of those configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "pipelines" / "configs"


def shrunk(name: str, /, **overrides: Any) -> Any:
    """Load a shipped config with overrides: tests shrink the real thing instead of faking it."""
    from pipelines.config import load_config

    return load_config(CONFIGS / name, overrides)
