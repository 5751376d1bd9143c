"""Counting the driver's once-per-sweep steps (planning, data preparation) in its log lines."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

#: The debug lines plan_sweep and prepare_arrays write each time they run.
PLANNED = "planned sweep "
PREPARED = "preparing data "


class _StepCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.counts = {"plans": 0, "preparations": 0}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(PLANNED):
            self.counts["plans"] += 1
        elif message.startswith(PREPARED):
            self.counts["preparations"] += 1


@contextmanager
def counting_steps() -> Iterator[dict[str, int]]:
    """Count, while the block runs, how often a sweep is planned and its data prepared.

    Yields the live counts: ``{"plans": n, "preparations": m}``.
    """
    logger = logging.getLogger("pipelines")
    counter, level = _StepCounter(), logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    try:
        yield counter.counts
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)
