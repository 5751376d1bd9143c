"""``tunepipe schedule``: run ``tunepipe retrain`` on a cron schedule in one long-running process.

For machines and containers without cron or systemd. Each firing runs the retrain as a child
process (``python -m pipelines.cli retrain CONFIG``), so Ray and MLflow state never builds up in
the scheduler itself, and logs the child's exit code with what it means:

- 0: done (promoted, kept the champion, or skipped because the data is unchanged);
- 1: failed (no trial reached a finite metric, a cluster error); the next firing tries again;
- 2: bad input (config or data); it fails the same way until a person fixes the config;
- 75 (``EX_TEMPFAIL``): another retrain of the experiment holds its lock; not an error.

One retrain at a time: a firing that comes while the previous retrain still runs is skipped,
and firings missed while the process was busy or asleep are merged into one. Ctrl-C or SIGTERM
stops scheduling and waits for a running retrain; a second one stops that retrain too.

Expressions are standard five-field cron, read by :mod:`pipelines.retrain.cron`.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger

from pipelines.errors import ConfigError
from pipelines.retrain.cron import parse_cron
from pipelines.retrain.lock import EXIT_BUSY

logger = logging.getLogger(__name__)

#: ``tunepipe retrain`` exit code when another retrain of the experiment holds the lock.
EX_TEMPFAIL = EXIT_BUSY

#: What each exit code of ``tunepipe retrain`` means, as the log line says it.
EXIT_MEANINGS = {
    0: "done (promoted, kept the champion, or skipped: data unchanged)",
    1: "failed (no usable trial or a cluster error); the next firing tries again",
    2: "bad input: fix the config or data, every firing fails the same way until then",
    EX_TEMPFAIL: "busy: another retrain of this experiment holds the lock; not an error",
    130: "interrupted (Ctrl-C); its runs were closed, the next firing tries again",
    143: "stopped (SIGTERM); its runs were closed, the next firing tries again",
}

#: A firing up to an hour late (machine asleep, process paused) still runs; later ones are
#: dropped in favour of the next slot, which suits a daily retrain.
MISFIRE_GRACE_S = 3600

#: Exit code reported when the retrain command cannot be started at all (shell convention).
COMMAND_NOT_RUN = 127


def retrain_command(config: Path | str, extra_args: Sequence[str] = ()) -> list[str]:
    """Return the command one firing runs: ``tunepipe retrain CONFIG`` in this interpreter.

    Args:
        config: The experiment YAML, as given (relative paths resolve in the working directory).
        extra_args: More ``retrain`` arguments, e.g. ``["--set", "search.num_samples=8"]``.

    Returns:
        The argument list for :class:`subprocess.Popen`.

    """
    # The interpreter running the scheduler, not whatever `tunepipe` is first on PATH: the
    # retrain then uses exactly the installation (and virtualenv) the scheduler was started from.
    return [sys.executable, "-m", "pipelines.cli", "retrain", str(config), *extra_args]


def describe_exit(code: int) -> str:
    """Return what an exit code of ``tunepipe retrain`` means, for the log."""
    if code in EXIT_MEANINGS:
        return EXIT_MEANINGS[code]
    if code < 0:
        return f"killed by signal {-code}"
    if code == COMMAND_NOT_RUN:
        return "the retrain command could not be started"
    return "unexpected exit code (treated as a failure)"


class RetrainRunner:
    """Runs the retrain command, one run at a time, and counts finished runs.

    Every firing, from the cron trigger or the one-shot trigger, goes through :meth:`fire`; the
    lock here is what keeps two of them from overlapping whatever the scheduler does.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        max_runs: int | None = None,
        on_result: Callable[[int], None] | None = None,
    ) -> None:
        self.command = list(command)
        self.max_runs = max_runs
        self.on_result = on_result
        self.runs = 0
        #: Set when ``max_runs`` runs have finished; the scheduler process then stops.
        self.finished = threading.Event()
        self._stopping = threading.Event()
        self._busy = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether a retrain is running now."""
        return self._process is not None and self._process.poll() is None

    def fire(self, trigger: str = "cron") -> int | None:
        """Run the command once unless one is running, or the runner is stopping or done.

        Args:
            trigger: Which trigger fired, for the log.

        Returns:
            The command's exit code, or None if this firing was skipped.

        """
        if not self._busy.acquire(blocking=False):
            logger.warning("%s firing skipped: the previous retrain is still running", trigger)
            return None
        try:
            if self._stopping.is_set() or self.finished.is_set():
                return None
            code = self._run(trigger)
            # Still holding the lock: the count and the callback stay in firing order, and
            # wait_idle() returns only after both.
            self.runs += 1
            try:
                if self.on_result is not None:
                    self.on_result(code)
            finally:
                if self.max_runs is not None and self.runs >= self.max_runs:
                    self.finished.set()
            return code
        finally:
            self._busy.release()

    def stop(self) -> None:
        """Start no more runs; a running one goes on (see :meth:`terminate`)."""
        self._stopping.set()

    def wait_idle(self) -> None:
        """Wait until no run is in progress (callback included)."""
        with self._busy:
            pass

    def terminate(self) -> None:
        """Ask a running retrain to stop (SIGTERM), as a second Ctrl-C does."""
        process = self._process
        if process is not None and process.poll() is None:
            logger.warning("stopping the running retrain (pid %d)", process.pid)
            process.terminate()

    def _run(self, trigger: str) -> int:
        logger.info("%s firing: running %s", trigger, " ".join(self.command))
        try:
            # Output goes where the scheduler's goes (terminal, container log, journald).
            self._process = subprocess.Popen(self.command)
        except OSError as exc:
            logger.error("could not start the retrain: %s", exc)
            return COMMAND_NOT_RUN
        code = self._process.wait()
        log = logger.info if code in (0, EX_TEMPFAIL) else logger.error
        log("retrain exited with %d: %s", code, describe_exit(code))
        return code


def run_schedule(
    cron: str,
    config: Path,
    extra_args: list[str],
    *,
    max_runs: int | None = None,
    run_now: bool = False,
    timezone: str | None = None,
    on_result: Callable[[int], None] | None = None,
    command: list[str] | None = None,
) -> None:
    """Run ``tunepipe retrain CONFIG`` at every firing of ``cron`` until stopped.

    Blocks until ``max_runs`` retrains have finished (None: until Ctrl-C or SIGTERM, which
    stop scheduling and wait for a running retrain; a second one stops that retrain too).

    Args:
        cron: Five-field cron expression, e.g. ``"0 3 * * *"``.
        config: The experiment YAML to retrain.
        extra_args: More ``retrain`` arguments (``--set k=v``, ``--force``).
        max_runs: Stop after this many retrains (None: never).
        run_now: Also run once right away (a one-shot trigger), then follow the schedule.
        timezone: IANA time zone the expression is read in (default: the machine's).
        on_result: Called with each retrain's exit code.
        command: The command to run (default: ``tunepipe retrain CONFIG`` with ``extra_args``,
            see :func:`retrain_command`).

    Raises:
        ConfigError: Invalid ``cron`` or ``timezone``, a missing ``config``, or ``max_runs`` < 1.

    """
    trigger = parse_cron(cron, timezone)
    if max_runs is not None and max_runs < 1:
        raise ConfigError(
            f"--max-runs must be at least 1, got {max_runs}",
            key="--max-runs",
            fix="leave it out to run until stopped",
        )
    if command is None:
        if not config.is_file():
            raise ConfigError(
                f"{config} does not exist",
                source=config,
                fix="give the path of an experiment YAML",
            )
        command = retrain_command(config, extra_args)
    _show_logs()
    runner = RetrainRunner(command, max_runs=max_runs, on_result=on_result)
    scheduler = BackgroundScheduler(timezone=trigger.timezone)
    scheduler.add_job(
        runner.fire,
        trigger,
        args=["cron"],
        id="retrain",
        max_instances=1,
        coalesce=True,  # several missed firings (process paused, clock jump) run once
        misfire_grace_time=MISFIRE_GRACE_S,
    )
    if run_now:
        scheduler.add_job(
            runner.fire,
            DateTrigger(run_date=datetime.now(trigger.timezone), timezone=trigger.timezone),
            args=["one-shot"],
            id="retrain-now",
            max_instances=1,
            misfire_grace_time=None,  # "now" must run however long the scheduler took to start
        )
    _serve(scheduler, runner, cron)


def _serve(
    scheduler: BackgroundScheduler,
    runner: RetrainRunner,
    cron: str,
) -> None:
    """Run the scheduler until the runner is done or Ctrl-C / SIGTERM stops it."""
    # Signal handlers can only be set from the main thread; elsewhere only max_runs ends it.
    main = threading.current_thread() is threading.main_thread()
    # A service manager (or `docker stop`) stops us with SIGTERM: treat it like Ctrl-C.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt) if main else None
    try:
        scheduler.start()
        job = scheduler.get_job("retrain")
        logger.info("schedule %r: next retrain at %s", cron, job and job.next_run_time)
        while not runner.finished.wait(timeout=0.5):
            pass
    except KeyboardInterrupt:
        logger.info("stopping: no more retrains will start")
    finally:
        runner.stop()
        scheduler.shutdown(wait=False)
        if runner.running:
            logger.info("waiting for the running retrain to finish (Ctrl-C again to stop it)")
        try:
            runner.wait_idle()
        except KeyboardInterrupt:
            runner.terminate()
            runner.wait_idle()
        if main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _show_logs() -> None:
    """Send this module's log lines to stderr when nothing else configured logging."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        # APScheduler announces every job start and end; our own lines say what matters.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
