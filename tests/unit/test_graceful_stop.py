"""SIGINT and SIGTERM reach Ray Tune's graceful stop, and say which one came."""

from __future__ import annotations

import os
import signal
import time

import pytest

from pipelines.sweep.signals import graceful_stop


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_becomes_tunes_stop_request_and_a_second_is_not_caught(
    signum: int, code: int
) -> None:
    tune_stops: list[int] = []
    # Stands in for the handler Tune installs while its loop runs (SIGUSR1: stop gracefully).
    previous_usr1 = signal.signal(signal.SIGUSR1, lambda s, f: tune_stops.append(s))
    before = signal.getsignal(signum)
    try:
        with graceful_stop() as stop:
            assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"
            os.kill(os.getpid(), signum)
            time.sleep(0.1)  # the handlers run between bytecodes of the main thread
            assert tune_stops == [signal.SIGUSR1]
            assert signal.getsignal(signum) is before  # a second signal is not graceful
        assert stop.signum == signum and stop.exit_code == code
        assert stop.name == signal.Signals(signum).name
        assert "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGUSR1, previous_usr1)


def test_a_signal_before_tunes_loop_interrupts_at_once() -> None:
    previous_usr1 = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        with pytest.raises(KeyboardInterrupt), graceful_stop():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
    finally:
        signal.signal(signal.SIGUSR1, previous_usr1)
