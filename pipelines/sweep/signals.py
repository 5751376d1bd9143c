"""A graceful stop: SIGINT or SIGTERM ends the sweep at its trials' checkpoints, resumable.

Ray Tune stops gracefully on SIGINT (and SIGUSR1): it leaves its loop, writes a last snapshot
in which the running trials are still unfinished, and stops their workers, so
``Tuner.restore`` continues them from their last checkpoint. SIGTERM (what systemd, Kubernetes
and ``kill`` send) would end the process at once. :func:`graceful_stop` routes both signals to
Tune's own stop (by way of SIGUSR1) and remembers which one came, so the driver can close its
MLflow runs as KILLED, say why, and exit 130 or 143. A second signal is not caught: it ends the
process the usual way.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType


@dataclass
class StopRequest:
    """Which signal asked the sweep to stop (None: it was not stopped)."""

    signum: int | None = None

    @property
    def name(self) -> str:
        """The signal's name, e.g. ``SIGTERM``."""
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def exit_code(self) -> int:
        """The shell's exit code for a process ended by the signal: 128 + its number."""
        return 128 + (self.signum or 0)


class SweepInterrupted(Exception):
    """The sweep was stopped by a signal at its trials' checkpoints and can be resumed."""

    def __init__(self, run_id: str, request: StopRequest, detail: str) -> None:
        super().__init__(detail)
        self.run_id = run_id
        self.signal = request.name
        self.exit_code = request.exit_code


@contextmanager
def graceful_stop() -> Iterator[StopRequest]:
    """Within the block, SIGINT and SIGTERM ask Tune to stop gracefully (main thread only)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def ask_tune_to_stop(signum: int, frame: FrameType | None) -> None:
        request.signum = signum
        for sig, handler in previous.items():  # a second signal is not graceful
            signal.signal(sig, handler)
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, signal.SIG_IGN, None):
            # Tune's loop has not started (or has ended): nothing to stop gracefully.
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGUSR1)

    # Tune would take SIGINT for itself and hide it from us; SIGUSR1 reaches the same stop.
    disabled = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    for sig in previous:
        signal.signal(sig, ask_tune_to_stop)
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if disabled is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = disabled
