"""Python scripts a test runs in a process of its own, which print one ``RESULT <json>`` line."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.support.configs import REPO


def run_for_result(script: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run ``script`` with ``args`` from the repository; return its last RESULT line's JSON.

    The script's output tails are the assertion message when it fails or prints no result.
    """
    completed = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and lines, completed.stdout[-3000:] + completed.stderr[-3000:]
    outcome: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return outcome
