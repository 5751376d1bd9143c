"""Holds back native (C++) log lines below ``TF_CPP_MIN_LOG_LEVEL`` while TensorFlow loads.

TensorFlow 2.21 logs some start-up lines through Abseil before it reads
``TF_CPP_MIN_LOG_LEVEL`` (``port.cc] oneDNN custom operations are on`` twice, each after
Abseil's "All log messages before absl::InitializeLog() is called" notice), so the variable no
longer keeps them out of a user's terminal. Those lines are written by C++ straight to file
descriptor 2, out of reach of Python's ``logging`` and ``sys.stderr``.

:func:`native_log_threshold` points descriptor 2 at a temporary file for the duration of a
block, then writes back every line except Abseil/glog records below the threshold (and the
Abseil notice, which only ever announces such records). Lines without a record prefix that
follow a held-back record are its continuation (TensorFlow's CPU-feature notice spans two) and
are held back with it; anything else written meanwhile (a Python warning, an error, another
thread's output) comes back in order, only later.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

#: glog/Abseil record prefix: severity letter, MMDD, time. Continuation lines have none.
_RECORD = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d")
_ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def kept_lines(text: str, min_level: int) -> list[str]:
    """Return the lines of ``text`` to show at TensorFlow log level ``min_level``.

    Args:
        text: What native code wrote to stderr, lines with their endings.
        min_level: ``TF_CPP_MIN_LOG_LEVEL``'s meaning: 0 all, 1 no INFO, 2 no WARNING, 3 no
            ERROR; FATAL records always stay.

    Returns:
        The lines kept, in order, endings included. A record's continuation lines share its fate.

    """
    kept: list[str] = []
    keep_current = True
    for line in text.splitlines(keepends=True):
        record = _RECORD.match(line)
        if record:
            keep_current = record.group(1) == "F" or _SEVERITY[record.group(1)] >= min_level
        elif line.startswith(_ABSL_NOTICE):
            keep_current = min_level == 0
        if keep_current:
            kept.append(line)
    return kept


def min_log_level() -> int:
    """Return ``TF_CPP_MIN_LOG_LEVEL`` as an int (0 when unset or not a number)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


@contextmanager
def native_log_threshold(min_level: int) -> Iterator[None]:
    """Within the block, drop native log records below ``min_level`` from descriptor 2.

    Args:
        min_level: As ``TF_CPP_MIN_LOG_LEVEL``; 0 changes nothing.

    """
    if min_level <= 0:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            if text:
                sys.stderr.write("".join(kept_lines(text, min_level)))
                sys.stderr.flush()
