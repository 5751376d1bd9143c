"""``tunepipe schedule``: cron parsing on a given clock, and real child processes per firing.

Firing times are computed from fixed start instants (no waiting). The runs use real commands
(a Python one-liner exiting with a chosen code, or sleeping until told to stop) in place of a
retrain, through the ``command`` parameter; one slow test runs the real ``tunepipe retrain``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger

from pipelines.errors import ConfigError
from pipelines.retrain.cron import next_fire_times, parse_cron
from pipelines.retrain.runner import EX_TEMPFAIL, RetrainRunner, retrain_command, run_schedule
from tests.support.configs import CONFIGS

RETRAIN_CONFIG = CONFIGS / "digits_retrain.yaml"


def _exit_with(code: int) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.exit({code})"]


def _far_cron() -> str:
    """A daily cron twelve hours away: it cannot fire while a test runs."""
    hour = (datetime.now(UTC).hour + 12) % 24
    return f"0 {hour} * * *"


def _one_shot(command: list[str] | None, config: Path = Path("unused.yaml")) -> list[int]:
    """Runs ``command`` once through ``run_schedule --run-now --max-runs 1``; returns its codes.

    ``None`` runs the real ``tunepipe retrain config``. The cron is twelve hours away, so the
    only firing is the one-shot one.
    """
    results: list[int] = []
    run_schedule(
        _far_cron(),
        config,
        [],
        run_now=True,
        max_runs=1,
        timezone="UTC",
        on_result=results.append,
        command=command,
    )
    return results


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# --- parse_cron ------------------------------------------------------------------------------


def test_parse_cron_accepts_a_daily_expression() -> None:
    trigger = parse_cron("0 3 * * *", "UTC")
    assert isinstance(trigger, CronTrigger)
    assert str(trigger.timezone) == "UTC"


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("61 * * * *", "61"),
        ("not cron", "5"),
        ("0 3 * *", "5"),
        ("0 25 * * *", "25"),
        ("0 3 * * 8", "day of the week"),
        ("0 3 * * 5-1", "backwards"),
        ("0 3 * * */0", "positive"),
        ("0 3 1 * 1", "both day of month and day of week"),
    ],
)
def test_parse_cron_rejects_bad_expressions_naming_the_option(expr: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_cron(expr, "UTC")
    assert info.value.key == "--cron"
    message = info.value.one_line()
    assert message.startswith("--cron: ")
    assert words in message
    assert "Fix: " in message


def test_parse_cron_rejects_an_unknown_timezone() -> None:
    with pytest.raises(ConfigError) as info:
        parse_cron("0 3 * * *", "Mars/Olympus_Mons")
    assert info.value.key == "--timezone"
    assert "Mars/Olympus_Mons" in info.value.one_line()


# --- next_fire_times: a given clock ----------------------------------------------------------


def test_daily_expression_fires_at_three_on_consecutive_days() -> None:
    start = datetime(2025, 1, 30, 12, 0, tzinfo=UTC)
    times = next_fire_times("0 3 * * *", start, 4, timezone="UTC")
    days = [(1, 31), (2, 1), (2, 2), (2, 3)]
    assert times == [datetime(2025, month, day, 3, 0, tzinfo=UTC) for month, day in days]


def test_start_is_inclusive_and_a_naive_start_is_read_in_the_timezone() -> None:
    times = next_fire_times("0 3 * * *", datetime(2025, 6, 1, 3, 0), 1, timezone="Asia/Tokyo")
    assert times[0].isoformat() == "2025-06-01T03:00:00+09:00"


def test_timezone_moves_the_firing_in_utc() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    winter = next_fire_times("0 3 * * *", start, 1, timezone="America/New_York")[0]
    summer = next_fire_times(
        "0 3 * * *", datetime(2025, 7, 1, tzinfo=UTC), 1, timezone="America/New_York"
    )[0]
    assert (winter.hour, winter.astimezone(UTC).hour) == (3, 8)
    assert (summer.hour, summer.astimezone(UTC).hour) == (3, 7)


def test_daylight_saving_change_keeps_local_three_oclock() -> None:
    # Berlin springs forward on 2025-03-30 at 02:00: 03:00 local stays 03:00, the day is 23 h.
    times = next_fire_times("0 3 * * *", datetime(2025, 3, 29), 2, timezone="Europe/Berlin")
    assert [t.hour for t in times] == [3, 3]
    assert times[1].astimezone(UTC) - times[0].astimezone(UTC) == timedelta(hours=23)


@pytest.mark.parametrize(
    ("weekday_field", "weekdays"),
    [
        # Python: Monday is 0, Sunday 6. cron: Sunday is 0 and 7.
        ("0", {6}),
        ("7", {6}),
        ("1-5", {0, 1, 2, 3, 4}),
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("6,0", {5, 6}),
        ("*/2", {6, 1, 3, 5}),  # cron counts the step from Sunday: sun, tue, thu, sat
        ("5-7", {4, 5, 6}),
    ],
)
def test_weekday_numbers_mean_what_they_mean_to_cron(
    weekday_field: str, weekdays: set[int]
) -> None:
    times = next_fire_times(f"0 3 * * {weekday_field}", datetime(2025, 1, 6), 21, "UTC")
    assert {t.weekday() for t in times} == weekdays


def test_macros_equal_their_five_field_form() -> None:
    start = datetime(2025, 5, 5, 10, 30, tzinfo=UTC)
    assert next_fire_times("@daily", start, 3, "UTC") == next_fire_times(
        "0 0 * * *", start, 3, "UTC"
    )
    assert next_fire_times("@weekly", start, 2, "UTC")[0].weekday() == 6  # Sunday


# --- the command and the runs ----------------------------------------------------------------


def test_retrain_command_runs_the_cli_module_of_this_interpreter() -> None:
    command = retrain_command(Path("pipelines/configs/x.yaml"), ["--set", "search.seed=1"])
    assert command == [
        sys.executable,
        "-m",
        "pipelines.cli",
        "retrain",
        "pipelines/configs/x.yaml",
        "--set",
        "search.seed=1",
    ]
    # The module runs as a program (pipelines/cli.py has its __main__ guard).
    shown = subprocess.run([*command[:3], "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "Usage" in shown.stdout


def test_one_shot_run_passes_the_real_exit_code_and_logs_busy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pipelines.retrain.runner")
    assert _one_shot(_exit_with(EX_TEMPFAIL)) == [EX_TEMPFAIL]
    assert "retrain exited with 75: busy" in caplog.text
    assert "one-shot firing" in caplog.text


def test_failed_and_bad_input_codes_are_logged_as_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pipelines.retrain.runner")
    runner = RetrainRunner(_exit_with(2))
    assert runner.fire("cron") == 2
    [record] = [r for r in caplog.records if "exited with" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert "bad input" in record.getMessage()


def test_a_command_that_cannot_start_reports_127(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipelines.retrain.runner")
    assert _one_shot(["/nonexistent/tunepipe"]) == [127]
    assert "could not start the retrain" in caplog.text


def test_missing_config_and_bad_max_runs_are_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        run_schedule("0 3 * * *", tmp_path / "missing.yaml", [], run_now=True, max_runs=1)
    with pytest.raises(ConfigError) as info:
        run_schedule("0 3 * * *", tmp_path / "missing.yaml", [], max_runs=0)
    assert info.value.key == "--max-runs"


def test_a_firing_while_a_retrain_runs_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    hold = textwrap.dedent(
        f"""
        import pathlib, time
        pathlib.Path({str(started)!r}).touch()
        while not pathlib.Path({str(release)!r}).exists():
            time.sleep(0.02)
        """
    )
    results: list[int] = []
    runner = RetrainRunner([sys.executable, "-c", hold], on_result=results.append)
    first = threading.Thread(target=runner.fire, args=("one-shot",))
    first.start()
    try:
        _wait_for(started.exists)
        assert runner.running
        assert runner.fire("cron") is None  # returns at once, runs nothing
        assert "cron firing skipped: the previous retrain is still running" in caplog.text
    finally:
        release.touch()
        first.join(timeout=10)
    assert results == [0]
    assert runner.runs == 1


def _scheduler_process(tmp_path: Path, retrain: str) -> subprocess.Popen[str]:
    """Start ``run_schedule`` (run now, no max) in its own process, logging to a file."""
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from pipelines.retrain.runner import run_schedule

        results = []
        run_schedule({_far_cron()!r}, Path("unused.yaml"), [], run_now=True, timezone="UTC",
                     on_result=results.append, command=[sys.executable, "-c", {retrain!r}])
        print("results", results, flush=True)
        """
    )
    with (tmp_path / "scheduler.log").open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=log, text=True
        )


def test_sigterm_stops_the_schedule_after_the_running_retrain(tmp_path: Path) -> None:
    started, finished = tmp_path / "started", tmp_path / "finished"
    retrain = (
        f"import pathlib, time; pathlib.Path({str(started)!r}).touch(); time.sleep(1.5); "
        f"pathlib.Path({str(finished)!r}).touch()"
    )
    process = _scheduler_process(tmp_path, retrain)
    try:
        _wait_for(started.exists, timeout=60)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0
    assert finished.exists(), "the running retrain was cut short"
    assert "results [0]" in out
    log = (tmp_path / "scheduler.log").read_text()
    assert "stopping: no more retrains will start" in log
    assert "waiting for the running retrain to finish" in log


def test_a_second_sigterm_stops_the_running_retrain(tmp_path: Path) -> None:
    started = tmp_path / "started"
    retrain = f"import pathlib, time; pathlib.Path({str(started)!r}).touch(); time.sleep(60)"
    process = _scheduler_process(tmp_path, retrain)
    log = tmp_path / "scheduler.log"
    try:
        _wait_for(started.exists, timeout=60)
        process.send_signal(signal.SIGTERM)
        _wait_for(lambda: "waiting for the running retrain" in log.read_text())
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0
    assert f"results [{-signal.SIGTERM}]" in out
    assert "stopping the running retrain" in log.read_text()


def test_default_command_is_the_real_retrain_which_answers_busy_under_the_lock() -> None:
    """With the experiment's retrain lock held here, the real CLI exits 75 without retraining."""
    from pipelines.config import load_config
    from pipelines.retrain.lock import experiment_lock

    with experiment_lock(load_config(RETRAIN_CONFIG).experiment_name):
        results = _one_shot(None, RETRAIN_CONFIG)
    assert results == [EX_TEMPFAIL]


@pytest.mark.slow
def test_schedule_runs_a_real_retrain(tmp_path: Path) -> None:
    """The default command end to end: one real ``tunepipe retrain`` of the documented config."""
    assert os.environ["TUNEPIPE_HOME"].startswith(str(tmp_path))  # conftest's private state
    assert _one_shot(None, RETRAIN_CONFIG) == [0]
