"""Native log records below TF_CPP_MIN_LOG_LEVEL are held back; everything else comes through."""

from __future__ import annotations

import os

import pytest

from trainables.native_stderr import kept_lines, native_log_threshold

NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
INFO = "I0000 00:00:1796001697.107052   16636 port.cc:153] oneDNN custom operations are on.\n"
WARN = "W1130 01:02:03.000000   16636 gpu.cc:10] no GPU found\n"
ERROR = "E1130 01:02:03.000000   16636 x.cc:1] something broke\n"
CONTINUED = "  details of the record above\n"
PYTHON = "UserWarning: a Python warning\n"


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (0, [PYTHON, NOTICE, INFO, CONTINUED, WARN, ERROR]),
        (1, [PYTHON, WARN, ERROR]),
        (2, [PYTHON, ERROR]),
        (3, [PYTHON]),
    ],
)
def test_records_below_the_level_go_with_their_continuation_lines(
    level: int, expected: list[str]
) -> None:
    text = "".join([PYTHON, NOTICE, INFO, CONTINUED, WARN, ERROR])
    assert kept_lines(text, level) == expected


def test_fatal_records_always_stay() -> None:
    fatal = "F1130 01:02:03.000000   1 x.cc:1] check failed\n"
    assert kept_lines(fatal, 3) == [fatal]


def test_writes_to_descriptor_2_are_filtered_and_the_rest_come_back_in_order(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with native_log_threshold(2):
        for line in (NOTICE, INFO, ERROR, PYTHON):
            os.write(2, line.encode())
    os.write(2, b"after\n")
    assert capfd.readouterr().err == ERROR + PYTHON + "after\n"


def test_level_zero_leaves_descriptor_2_alone(capfd: pytest.CaptureFixture[str]) -> None:
    with native_log_threshold(0):
        os.write(2, INFO.encode())
    assert capfd.readouterr().err == INFO
